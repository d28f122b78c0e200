defmodule Binscope.CollectorGcTest do
  # The collector's GC rounds (binscope_collector_gc): collections asked for a window of
  # processes at a time, each one's list after read once its collection replied.
  use ExUnit.Case, async: true

  import Bitwise
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

  # The figures of a ranking's rows, without the pid-dependent parts.
  defp figures(rows), do: Enum.map(rows, &Tuple.delete_at(&1, 0))

  test "compact: the lists go to the NIF, and the ranking is the records round's" do
    # Two alike populations (droppers and keepers alternating, more than two windows): one
    # ranked from its results' lists, one from the NIF's round. Addresses differ, figures not.
    records = for i <- 1..80, do: holder(rem(i, 2) == 0)
    compact = for i <- 1..80, do: holder(rem(i, 2) == 0)

    by_records = :binscope_collector.gc_round(records, %{budget_ms: 30_000})
    by_nif = :binscope_collector.gc_round(compact, %{budget_ms: 30_000, compact: true})

    refute Map.has_key?(by_records, :round)
    assert Enum.map(by_nif.results, &Collector.gc(&1, :pid)) == compact

    for r <- by_nif.results do
      assert Collector.gc(r, :binaries_before) == [] and Collector.gc(r, :binaries_after) == []
    end

    for {a, b} <- Enum.zip(by_records.results, by_nif.results) do
      assert Collector.gc(a, :total_heap_size) > 0 and Collector.gc(b, :total_heap_size) > 0
    end

    rows = Binscope.Native.leaks_full_rank(by_records.results, by_records.live_store_keys, 8, 100)
    rows_nif = Binscope.Native.leaks_full_rank_round(by_nif.round, by_nif.live_store_keys, 8, 100)
    assert length(rows) == 80
    assert Enum.map(rows, &elem(&1, 0)) == Enum.map(rows_nif, &elem(&1, 0))
    # Heap sizes may differ by a few words between two processes: compare the binary figures.
    assert figures(rows) |> Enum.map(&Tuple.delete_at(&1, 2)) ==
             figures(rows_nif) |> Enum.map(&Tuple.delete_at(&1, 2))

    # The droppers first, each 300 bytes given back.
    {freed, kept} = Enum.split(rows_nif, 40)
    assert Enum.all?(freed, fn {i, {1, 300, 1}, _, _, 0} -> rem(i, 2) == 1 end)
    assert Enum.all?(kept, fn {_, {0, 0, 0}, _, _, 0} -> true end)
    Enum.each(records ++ compact, &send(&1, :stop))
  end

  test "compact: a window past 4096 references goes to the dirty batch, with the same ranking" do
    # One process lists 5,000 refc binaries (and drops 300 bytes); its window's batch is handed
    # to the dirty variant. Two alike populations, ranked each way, agree.
    many = fn ->
      me = self()

      spawn(fn ->
        keep = for i <- 1..5_000, do: :binary.copy(<<i::64>>, 10)
        byte_size(:binary.copy(<<2>>, 300))
        send(me, {:ready, self()})

        receive do
          :stop -> length(keep)
        end
      end)
    end

    [a, b] =
      for _ <- 1..2 do
        pid = many.()
        assert_receive {:ready, ^pid}
        [holder(true), pid, holder(false)]
      end

    by_records = :binscope_collector.gc_round(a, %{budget_ms: 30_000})

    # The round's helper is traced (it is spawned by this process) for its batch calls.
    dirty = {Binscope.Native, :leaks_round_batch_dirty, 2}
    :erlang.trace_pattern(dirty, true, [:global])
    :erlang.trace(self(), true, [:call, :set_on_spawn])

    by_nif =
      try do
        :binscope_collector.gc_round(b, %{budget_ms: 30_000, compact: true})
      after
        :erlang.trace(self(), false, [:call, :set_on_spawn])
        :erlang.trace_pattern(dirty, false, [:global])
      end

    assert_receive {:trace, _, :call, {Binscope.Native, :leaks_round_batch_dirty, _}}, 5_000

    rows = Binscope.Native.leaks_full_rank(by_records.results, by_records.live_store_keys, 8, 10)
    rows_nif = Binscope.Native.leaks_full_rank_round(by_nif.round, by_nif.live_store_keys, 8, 10)
    strip = fn rows -> rows |> figures() |> Enum.map(&Tuple.delete_at(&1, 2)) end
    assert strip.(rows) == strip.(rows_nif)
    assert Enum.map(rows_nif, &elem(&1, 0)) == Enum.map(rows, &elem(&1, 0))
    # The holder of 5,000 gave back its 300 bytes, and keeps its 5,000 binaries.
    assert {1, {1, 300, 1}, [5_000 | _], _, 0} = Enum.find(rows_nif, &(elem(&1, 0) == 1))
    Enum.each(a ++ b, &send(&1, :stop))
  end

  test "compact batches: malformed or too large for a normal scheduler, refused whole" do
    round = Binscope.Native.leaks_round_new(4)
    ref = {1 <<< 40, 100, 1}
    assert Binscope.Native.leaks_round_batch(round, [[ref], [], 10])

    for bad <- [[[ref], []], [[ref], [], -1], [[:nope], [], 10], [[ref], [ref], :x, [], [], 1]] do
      assert_raise ArgumentError, fn -> Binscope.Native.leaks_round_batch(round, bad) end
    end

    # A normal-scheduler batch holds at most 4096 references; the dirty variant any number.
    many = List.duplicate(ref, 4097)
    assert_raise ArgumentError, fn -> Binscope.Native.leaks_round_batch(round, [many, [], 1]) end
    assert Binscope.Native.leaks_round_batch_dirty(round, [many, [], 1])

    # Two processes in all: the first batch and the dirty one; nothing of the refused ones.
    assert length(Binscope.Native.leaks_full_rank_round(round, [], 8, 10)) == 2
  end
end
