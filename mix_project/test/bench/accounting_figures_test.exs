defmodule Binscope.Bench.AccountingFiguresTest do
  # The accounting issue's figures, measured in one run (reports, not timed tests):
  # - snapshot + attribution of 50k processes against one plain sweep of
  #   process_info(pid, [:binary, :memory]) over the same processes;
  # - targeted leaks against :full on 50k mostly idle processes with a few leakers, checking
  #   both find the same leakers.
  # Alternatives are interleaved round by round so machine drift cancels; medians reported.
  use Binscope.StoreCase, async: false

  alias Binscope.LeakScenario, as: S

  @moduletag :bench
  @procs String.to_integer(System.get_env("BINSCOPE_BENCH_PROCS", "50000"))
  @rounds 7
  @mib 1_048_576

  @tag timeout: :infinity
  test "scan and leak-finder costs at #{@procs} processes" do
    shared = :binary.copy(<<1>>, 100_000)

    pids =
      for i <- 1..@procs do
        spawn(fn ->
          own = if rem(i, 10) == 0, do: :binary.copy(<<2>>, 1_000 + i), else: nil

          receive do
            :stop -> {byte_size(shared), own}
          end
        end)
      end

    sweep = fn -> for p <- Process.list(), do: Process.info(p, [:binary, :memory]) end

    alts = [
      sweep: sweep,
      full: fn -> {:ok, _} = Binscope.snapshot(top_shared: 10) end,
      basic: fn -> {:ok, _} = Binscope.snapshot(top_shared: 10, detail: :basic) end,
      basic2: fn -> {:ok, _} = Binscope.snapshot(top_shared: 10, detail: :basic, workers: 2) end
    ]

    # Every round runs the alternatives in a rotated order, each from a freshly collected heap:
    # no alternative pays for the garbage another left.
    scan =
      for r <- 1..@rounds do
        {head, tail} = Enum.split(alts, rem(r, length(alts)))

        Map.new(tail ++ head, fn {name, f} ->
          :erlang.garbage_collect()
          {t, _} = :timer.tc(f)
          {name, t}
        end)
      end

    [sweep_us, snap_us, basic_us, basic2_us] =
      for k <- [:sweep, :full, :basic, :basic2], do: median(Enum.map(scan, & &1[k]))

    leak =
      for _ <- 1..@rounds do
        l1 = for n <- 1..3, do: elem(S.burst_then_idle(4, n * @mib), 0)
        {t1, {:ok, found1}} = :timer.tc(fn -> Binscope.leaks(limit: 3) end)
        l2 = for n <- 1..3, do: elem(S.burst_then_idle(4, n * @mib), 0)
        {t2, {:ok, found2}} = :timer.tc(fn -> Binscope.leaks(mode: :full, limit: 3) end)
        assert Enum.map(found1, & &1.pid) == Enum.reverse(l1)
        assert Enum.map(found2, & &1.pid) == Enum.reverse(l2)
        assert Enum.map(found1, & &1.reclaimed_bytes) == Enum.map(found2, & &1.reclaimed_bytes)
        S.stop_all(l1 ++ l2)
        {t1, t2}
      end

    {targeted_us, full_us} = medians(leak)
    n = length(Process.list())
    {:ok, %{workers: auto}} = Binscope.snapshot(detail: :basic, top_shared: 0)

    rows = [
      ["plain sweep process_info([:binary, :memory])", ms(sweep_us), per(sweep_us, n), "1.00"],
      [
        "Binscope.snapshot (collect + attribute)",
        ms(snap_us),
        per(snap_us, n),
        ratio(snap_us, sweep_us)
      ],
      [
        "Binscope.snapshot(detail: :basic), #{auto} worker(s)",
        ms(basic_us),
        per(basic_us, n),
        ratio(basic_us, sweep_us)
      ],
      [
        "Binscope.snapshot(detail: :basic, workers: 2)",
        ms(basic2_us),
        per(basic2_us, n),
        ratio(basic2_us, sweep_us)
      ],
      [
        "Binscope.leaks (targeted, 20 candidates)",
        ms(targeted_us),
        per(targeted_us, n),
        ratio(targeted_us, full_us) <> " of full"
      ],
      ["Binscope.leaks(mode: :full)", ms(full_us), per(full_us, n), "1.00 of full"]
    ]

    IO.puts(
      "\naccounting at #{n} processes, #{:erlang.system_info(:schedulers_online)} schedulers " <>
        "(median of #{@rounds} interleaved rounds)"
    )

    IO.write(Binscope.Render.Table.render(["what", "ms", "µs/process", "ratio"], rows))
    S.stop_all(pids)
  end

  defp medians(pairs) do
    {as, bs} = Enum.unzip(pairs)
    {median(as), median(bs)}
  end

  defp median(xs), do: xs |> Enum.sort() |> Enum.at(div(length(xs), 2))
  defp ms(us), do: Float.round(us / 1000, 1)
  defp per(us, n), do: Float.round(us / n, 2)
  defp ratio(a, b), do: :erlang.float_to_binary(a / b, decimals: 2)
end
