defmodule Binscope.LeaksWindowTest do
  # The targeted leak scan's activity window runs during its sweep: with `window_ms` the collector
  # reads the reductions of the pids each scanning process sweeps last before its sweep (a
  # direct read), their records carry that first sample, and the snapshot says when every
  # record's first sample was in (`sampled_age_us` before the reply). Checked by tracing every
  # process_info/2 call the scan makes.
  use ExUnit.Case, async: false

  require Binscope.Collector, as: Collector

  alias Binscope.LeakScenario, as: S

  @mib 1_048_576

  # Every process_info/2 call of the calling process and the processes it starts while `fun`
  # runs: [{scanner, target, item, result, returned_at_us}], in call order per scanner.
  defp traced(fun) do
    tracer = spawn(fn -> collect(%{}, []) end)
    mfa = {:erlang, :process_info, 2}
    :erlang.trace_pattern(mfa, [{:_, [], [{:return_trace}]}], [:global])
    :erlang.trace(self(), true, [:call, :set_on_spawn, :monotonic_timestamp, {:tracer, tracer}])

    result =
      try do
        fun.()
      after
        :erlang.trace(self(), false, [:call, :set_on_spawn])
        :erlang.trace_pattern(mfa, false, [:global])
      end

    returned = System.monotonic_time(:microsecond)
    send(tracer, {:done, self()})
    assert_receive {:calls, calls}, 30_000
    {result, returned, calls}
  end

  defp collect(open, calls) do
    receive do
      {:trace_ts, p, :call, {:erlang, :process_info, [target, item]}, _ts} ->
        collect(Map.put(open, p, {target, item}), calls)

      {:trace_ts, p, :return_from, {:erlang, :process_info, 2}, res, ts} ->
        {target, item} = Map.fetch!(open, p)
        us = System.convert_time_unit(ts, :native, :microsecond)
        collect(Map.delete(open, p), [{p, target, item, res, us} | calls])

      {:done, from} ->
        send(from, {:calls, Enum.reverse(calls)})
    end
  end

  defp idle(n), do: for(_ <- 1..n, do: spawn(fn -> receive(do: (:stop -> :ok)) end))

  # The first sample of each pid the scan read (when its first process_info/2 call returned)
  # and the presampled ones (a reductions-only read) with the value read.
  defp samples(calls) do
    first =
      Enum.reduce(calls, %{}, fn {_, target, _, _, us}, acc -> Map.put_new(acc, target, us) end)

    pre = for {_, t, :reductions, {:reductions, r}, _} <- calls, into: %{}, do: {t, r}
    {first, pre}
  end

  # The pids presampled, whether or not they were still alive: a whole-node scan also lists the
  # processes of tests running meanwhile, and one that exits before its presample has no figure.
  defp presampled(calls), do: MapSet.new(for {_, t, :reductions, _, _} <- calls, do: t)

  test "a presampled record carries its first sample, taken before the sweep; the window starts at the head's end" do
    pids = idle(3_000)

    try do
      # 1 ms of window: the last 1,000 pids are presampled, the others' first sample is the sweep's.
      opts = %{detail: :basic, reductions: true, window_ms: 1, workers: 1}
      {snap, returned, calls} = traced(fn -> :binscope_collector.snapshot(opts) end)
      {first, pre} = samples(calls)
      assert MapSet.size(presampled(calls)) == 1_000
      sampled_at = returned - snap.sampled_age_us

      for rec <- snap.procs do
        pid = Collector.basic(rec, :pid)
        # The window never starts before a record's first sample.
        assert Map.fetch!(first, pid) <= sampled_at
        if Map.has_key?(pre, pid), do: assert(Collector.basic(rec, :reductions) == pre[pid])
      end

      # Every presampled pid is read before the sweep starts, and swept after the window's start:
      # the age covers at least the sweep of the presampled pids.
      sweeps = for {_, t, items, _, us} <- calls, is_list(items), Map.has_key?(pre, t), do: us
      presampled = for {_, t, :reductions, _, us} <- calls, Map.has_key?(pre, t), do: us
      assert length(sweeps) == 1_000
      assert Enum.max(presampled) < Enum.min(sweeps)
      assert snap.sampled_age_us >= Enum.max(sweeps) - Enum.min(sweeps)
    after
      S.stop_all(pids)
    end
  end

  test "split among workers, each presamples the end of its own share" do
    pids = idle(9_000)

    try do
      # Two shares of 4,500 pids; 2 ms of window: the last 2,000 of each are presampled.
      opts = %{pids: pids, detail: :basic, reductions: true, window_ms: 2, workers: 2}
      {snap, returned, calls} = traced(fn -> :binscope_collector.snapshot(opts) end)
      assert snap.workers == 2
      {first, pre} = samples(calls)
      assert map_size(pre) == 4_000

      assert MapSet.new(Map.keys(pre)) ==
               MapSet.new(Enum.slice(pids, 2_500, 2_000) ++ Enum.slice(pids, 7_000, 2_000))

      sampled_at = returned - snap.sampled_age_us
      assert length(snap.procs) == 9_000

      for rec <- snap.procs do
        pid = Collector.basic(rec, :pid)
        assert Map.fetch!(first, pid) <= sampled_at
        if Map.has_key?(pre, pid), do: assert(Collector.basic(rec, :reductions) == pre[pid])
      end
    after
      S.stop_all(pids)
    end
  end

  test "a whole-node scan split among workers presamples each share's end (the pid list, not the iterator)" do
    pids = idle(12_500)

    try do
      opts = %{detail: :basic, reductions: true, window_ms: 1, workers: 3}
      {snap, returned, calls} = traced(fn -> :binscope_collector.snapshot(opts) end)
      assert snap.workers == 3
      {first, pre} = samples(calls)
      assert MapSet.size(presampled(calls)) == 3_000
      sampled_at = returned - snap.sampled_age_us
      found = MapSet.new(snap.procs, &Collector.basic(&1, :pid))
      assert MapSet.subset?(MapSet.new(pids), found)

      for rec <- snap.procs do
        pid = Collector.basic(rec, :pid)
        assert Map.fetch!(first, pid) <= sampled_at
        if Map.has_key?(pre, pid), do: assert(Collector.basic(rec, :reductions) == pre[pid])
      end
    after
      S.stop_all(pids)
    end
  end

  test "the presample honours the scan's deadline" do
    pids = idle(5_000)

    try do
      # A window of a minute presamples every pid; a budget of 0 ms is spent at once: the scan
      # gives up at its first look at the clock, 256 pids in, not after reading all of them.
      opts = %{pids: pids, detail: :basic, reductions: true, window_ms: 60_000, budget_ms: 0}
      {thrown, _, calls} = traced(fn -> catch_throw(:binscope_collector.snapshot(opts)) end)
      assert thrown == {:binscope_collector, :timeout}
      assert length(for {_, _, :reductions, _, _} <- calls, do: 1) <= 256
    after
      S.stop_all(pids)
    end
  end

  test "no window, no presample and no age; full detail never presamples" do
    pids = idle(100)

    try do
      for opts <- [
            %{pids: pids, detail: :basic, reductions: true},
            %{pids: pids, detail: :basic, reductions: true, window_ms: 0},
            %{pids: pids, detail: :full, window_ms: 50}
          ] do
        {snap, _, calls} = traced(fn -> :binscope_collector.snapshot(opts) end)
        refute Map.has_key?(snap, :sampled_age_us), inspect(opts)
        assert for({_, _, :reductions, _, _} <- calls, do: 1) == [], inspect(opts)
      end
    after
      S.stop_all(pids)
    end
  end

  test "leaks/1 collects an idle leaker with its exact bytes, presampled or not" do
    # idle_ms: 1 presamples the last 1,000 pids: the 3,000 started after the leaker normally
    # leave it the sweep's sample (pids are listed in the order of their slots, which wrap at
    # the table's end). idle_ms: 50 presamples every pid of this node. (A running process next
    # to it is not part of this test: a 1 ms window cannot tell a process that runs every
    # millisecond from an idle one on a loaded machine, before this change as after it.)
    for idle_ms <- [1, 50] do
      {leaker, dropped} = S.burst_then_idle(3, @mib)
      pad = idle(3_000)

      try do
        {:ok, results} = Binscope.leaks(idle_ms: idle_ms)
        r = Enum.find(results, &(&1.pid == leaker))
        assert %{reclaimed_bytes: ^dropped, likely_garbage_bytes: ^dropped} = r, "#{idle_ms}"
      after
        S.stop_all([leaker | pad])
      end
    end
  end
end
