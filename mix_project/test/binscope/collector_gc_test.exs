defmodule Binscope.CollectorGcTest do
  # The collector's GC rounds (binscope_collector_gc): collections asked for a window of
  # processes at a time, each one's list after read once its collection replied.
  use ExUnit.Case, async: true

  require Binscope.Collector, as: Collector

  # Holds `keep` (a refc binary it references) and, with `drop: true`, a fresh refc binary it
  # referenced once and dropped, without a collection since: garbage only a GC frees.
  defp holder(drop?) do
    me = self()

    pid =
      spawn(fn ->
        keep = :binary.copy(<<1>>, 200)
        if drop?, do: byte_size(:binary.copy(<<2>>, 300))
        send(me, {:ready, self()})

        receive do
          :stop -> byte_size(keep)
        end
      end)

    assert_receive {:ready, ^pid}
    pid
  end

  defp sizes(bins), do: bins |> Enum.map(&elem(&1, 1)) |> Enum.sort()

  test "every live pid once, in the order given, its list after its collection" do
    # More processes than one window of collections (32): three windows, droppers and keepers
    # alternating, a dead pid among them.
    dead = spawn(fn -> :ok end)
    ref = Process.monitor(dead)
    assert_receive {:DOWN, ^ref, :process, ^dead, _}
    pids = for i <- 1..80, do: holder(rem(i, 2) == 0)
    given = List.insert_at(pids, 40, dead)

    round = :binscope_collector.gc_round(given, %{budget_ms: 30_000})

    assert Enum.map(round.results, &Collector.gc(&1, :pid)) == pids

    for {r, i} <- Enum.with_index(round.results, 1) do
      Collector.gc(binaries_before: before, binaries_after: after_gc) = r

      if rem(i, 2) == 0 do
        assert sizes(before) == [200, 300]
      else
        assert sizes(before) == [200]
      end

      assert sizes(after_gc) == [200]
    end

    # The collections' replies went to the round's helper: none is left here.
    refute_received {:garbage_collect, _, _}
    Enum.each(pids, &send(&1, :stop))
  end

  test "without a budget too (a helper collects, the caller waits)" do
    pids = for _ <- 1..3, do: holder(true)
    round = :binscope_collector.gc_round(pids)
    assert Enum.map(round.results, &Collector.gc(&1, :pid)) == pids
    assert Enum.all?(round.results, &(sizes(Collector.gc(&1, :binaries_after)) == [200]))
    refute_received {:garbage_collect, _, _}
    Enum.each(pids, &send(&1, :stop))
  end
end
