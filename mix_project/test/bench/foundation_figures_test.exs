defmodule Binscope.Bench.FoundationFiguresTest do
  # The Foundation issue's figures, measured in one run (a report, not a timed test):
  # - put/alloc throughput against :binary.copy at 1 KiB, 64 KiB, 1 MiB and 16 MiB, in a steady
  #   cycle where old copies are dropped (a ring of live copies; each new one replaces the oldest),
  #   alternatives interleaved round by round so machine drift cancels;
  # - bookkeeping overhead per store entry (native side via jemalloc, VM side via :erlang.memory);
  # - the time of Binscope.Store.stats/0.
  use Binscope.StoreCase, async: false

  @moduletag :bench
  @mib 1024 * 1024
  @ring 8

  @tag timeout: :infinity
  test "store vs :binary.copy, per-entry overhead, stats() time" do
    sizes = [1024, 64 * 1024, @mib, 16 * @mib]

    rows =
      for size <- sizes do
        src = :binary.copy("s", size)
        # Enough rounds for ~256 MiB of copying per alternative, at least 50.
        n = max(50, div(256 * @mib, size))

        alts = [
          {":binary.copy", fn -> :binary.copy(src) end},
          {"Store.put", fn -> Store.put!(src) end},
          {"Store.alloc", fn -> Store.alloc!(size, fill: 1) end}
        ]

        times = interleaved(alts, n, 5)
        base = times[":binary.copy"]

        for {name, _} <- alts do
          us = times[name]
          gib_s = size * n / (us / 1.0e6) / (1024 * 1024 * 1024)
          [fmt_size(size), name, Float.round(gib_s, 2), Float.round(base / us, 2)]
        end
      end
      |> Enum.concat()

    IO.puts("\nthroughput (steady cycle, ring of #{@ring}, median of 5 interleaved rounds)")

    IO.write(
      Binscope.Render.Table.render(["size", "what", "GiB/s", "speed vs :binary.copy"], rows)
    )

    overhead = per_entry_overhead(100_000)

    IO.puts(
      "\nper-entry overhead (100k 1-byte entries): native #{overhead.native} B " <>
        "(jemalloc allocated delta / n - 1), VM #{overhead.vm} B (:erlang.memory(:binary)+processes delta / n, " <>
        "includes the holder's list cell and ProcBin)"
    )

    {us, _} = :timer.tc(fn -> for _ <- 1..100_000, do: Store.stats() end)
    IO.puts("stats(): #{Float.round(us / 100_000, 3)} µs per call (100k calls)")
    assert overhead.native > 0
  end

  # Runs each alternative `n` times per round, alternatives in turn, for `rounds` rounds; returns
  # the median microseconds per alternative.
  defp interleaved(alts, n, rounds) do
    samples =
      for _ <- 1..rounds, {name, fun} <- alts do
        {name, in_process(fn -> steady_cycle(fun, n) end)}
      end

    samples
    |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))
    |> Map.new(fn {name, us} -> {name, median(us)} end)
  end

  defp steady_cycle(fun, n) do
    ring = :queue.from_list(for _ <- 1..@ring, do: fun.())
    :erlang.garbage_collect()

    {us, _} =
      :timer.tc(fn ->
        Enum.reduce(1..n, ring, fn _, q ->
          {{:value, _old}, q} = :queue.out(q)
          :queue.in(fun.(), q)
        end)
      end)

    us
  end

  defp per_entry_overhead(n) do
    in_process(fn ->
      :erlang.garbage_collect()
      a0 = Store.allocator().allocated
      m0 = :erlang.memory(:binary) + :erlang.memory(:processes)
      held = for _ <- 1..n, do: Store.put!("x")
      a1 = Store.allocator().allocated
      m1 = :erlang.memory(:binary) + :erlang.memory(:processes)
      _ = length(held)
      %{native: div(a1 - a0, n) - 1, vm: div(m1 - m0, n)}
    end)
  end

  defp median(list), do: list |> Enum.sort() |> Enum.at(div(length(list), 2))
  defp fmt_size(s) when s >= @mib, do: "#{div(s, @mib)} MiB"
  defp fmt_size(s), do: "#{div(s, 1024)} KiB"
end
