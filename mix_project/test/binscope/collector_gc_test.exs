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

  test "all: every process of the node but the caller and the round's own helper" do
    pids = for _ <- 1..3, do: holder(true)
    # Calibrated beforehand (its probe is a process of its own), so the round spawns its helper
    # only; a tracer learns the helper's pid.
    _ = :binscope_collector.calibration()
    me = self()
    tracer = spawn(fn -> traced(me, []) end)
    1 = :erlang.trace(self(), true, [:procs, {:tracer, tracer}])
    round = :binscope_collector.gc_round(:all, %{budget_ms: 30_000})
    :erlang.trace(self(), false, [:procs])
    send(tracer, :stop)
    assert_receive {:spawned, [helper]}

    got = Enum.map(round.results, &Collector.gc(&1, :pid))
    assert Enum.all?(pids, &(&1 in got))
    refute self() in got
    refute helper in got
    Enum.each(pids, &send(&1, :stop))
  end

  defp traced(to, acc) do
    receive do
      {:trace, _, :spawn, pid, _} -> traced(to, [pid | acc])
      {:trace, _, _, _, _} -> traced(to, acc)
      {:trace, _, _, _} -> traced(to, acc)
      :stop -> send(to, {:spawned, Enum.reverse(acc)})
    end
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
