defmodule Binscope.Bench.Measure do
  @moduledoc """
  The measuring machinery behind `Binscope.Bench`: one long-lived worker process per alternative,
  runs dealt round-robin, and a tracer that receives the workers' garbage-collection events.

  Timed runs are never traced (a trace message at every collection doubled the time of a
  64 KiB copy cycle). The figures that need the trace (heap words and binary bytes allocated,
  minor and major GCs) come from up to 3 more rounds per alternative, interleaved the same way,
  run after the timed ones with tracing on.

  Per run, the worker reads its own counters around the timed section:

    * wall time: `:erlang.monotonic_time/0` around the calls only;
    * reductions: `process_info(self(), :reductions)`;
    * heap words allocated and binary bytes allocated: the sizes in
      `process_info(self(), :garbage_collection_info)` at both ends of the run, plus what every
      garbage collection inside the run reclaimed (read from `gc_*_start`/`gc_*_end` trace
      events, timestamped, so each event lands in its run). Heap words count the young and old
      heaps and heap fragments; binary bytes count the process's virtual binary heap, where
      every refc binary the process creates or receives is charged its full size (store binaries
      included);
    * minor and major GCs: the number of `gc_minor_start`/`gc_major_start` events in the run (a
      minor collection the VM turns into a major one shows as one of each), and the node-wide
      `:erlang.statistics(:garbage_collection)` delta (every process, so noisy);
    * VM binary memory delta (`:erlang.memory(:binary)`, node-wide) and store delta
      (`Binscope.Store.stats/0`: allocations and live bytes).

  The cost of reading the counters (a few dozen words and reductions) is measured at the start of
  each worker with an empty run and subtracted. Heap words carry an error of up to ~150 words
  per collection inside the run (an explicit `:erlang.garbage_collect/0` of an idle process
  reads as ~60 words): exact enough to compare allocation patterns, not to count single terms.
  On OTP 29 a run with few collections can read lower still (runs of 40,000 words read 34,949
  with 6 collections, 42,851 with 19; the cause is not known).
  """

  alias Binscope.Bench.{Footprint, GcTrace, Stats}

  @metrics_key :binscope_bench_metrics

  # Traced runs per alternative for the allocation and GC figures (see `counted_runs/4`).
  @counted_runs 3

  @typedoc "One run's raw figures (per run, not per call)."
  @type sample :: %{
          time_ns: non_neg_integer(),
          reductions: integer(),
          heap_words: integer(),
          binary_bytes: integer(),
          minor_gcs: non_neg_integer(),
          major_gcs: non_neg_integer(),
          node_gcs: integer(),
          vm_binary_delta: integer(),
          store_allocs: integer(),
          store_bytes_delta: integer(),
          custom: %{optional(term()) => number()}
        }

  @doc false
  @spec metrics_key() :: atom()
  def metrics_key, do: @metrics_key

  @doc """
  Runs `alts` (a list of `%{name:, fun:, init:, batch:, spawn_opt:}`) for `warmup + runs` rounds,
  alternatives in turn (the order rotates every round), and returns the samples of the last
  `runs` rounds per name, in run order, plus the memory left behind once every worker has exited.
  """
  @spec session([map()], keyword()) ::
          {:ok, %{String.t() => [sample()]}, map()} | {:error, term()}
  def session(alts, opts) do
    runs = Keyword.fetch!(opts, :runs)
    warmup = Keyword.fetch!(opts, :warmup)
    timeout = Keyword.fetch!(opts, :timeout)
    trace? = Keyword.fetch!(opts, :trace_gc)

    before = Footprint.now()
    tracer = if trace?, do: GcTrace.start_tracer()
    workers = Enum.map(alts, fn alt -> {alt, start_worker(alt)} end)

    result =
      try do
        timed = run_rounds(workers, rounds(workers, warmup + runs), warmup, timeout)

        counted =
          if tracer && runs > 0,
            do: counted_runs(workers, tracer, min(runs, @counted_runs), timeout)

        samples =
          Map.new(workers, fn {alt, {pid, _}} ->
            raw = GcTrace.attach(Map.get(timed, alt.name, []), pid, nil)

            case counted do
              nil -> {alt.name, raw}
              c -> {alt.name, with_gc_figures(raw, GcTrace.attach(c[alt.name], pid, tracer))}
            end
          end)

        {:ok, samples}
      catch
        {:bench_failed, reason} -> {:error, reason}
      after
        Enum.each(workers, fn {_, {pid, mref}} -> stop_worker(pid, mref) end)
        if tracer, do: Process.exit(tracer, :kill)
      end

    case result do
      {:ok, samples} ->
        {:ok, samples, Footprint.since(before)}

      error ->
        error
    end
  end

  # Runs `order` and returns each alternative's samples in run order, warm-up rounds dropped.
  defp run_rounds(workers, order, warmup, timeout) do
    order
    |> Enum.reduce(%{}, fn {round, {alt, {pid, mref}}}, acc ->
      sample = run_once(pid, mref, timeout)
      if round > warmup, do: Map.update(acc, alt.name, [sample], &[sample | &1]), else: acc
    end)
    |> Map.new(fn {name, samples} -> {name, Enum.reverse(samples)} end)
    |> then(&Map.merge(Map.new(workers, fn {alt, _} -> {alt.name, []} end), &1))
  end

  # The GC figures come from traced runs of their own, after the timed ones: a traced worker
  # sends a trace message at every collection, which the timed runs must not pay (it doubled the
  # time of a 64 KiB `:binary.copy` cycle, 0.84 -> 1.3-2.0 us a call, and so moved every ratio
  # towards 1). The same rounds, interleaved, with tracing on.
  defp counted_runs(workers, tracer, n, timeout) do
    flags = [:garbage_collection, :monotonic_timestamp, {:tracer, tracer}]
    Enum.each(workers, fn {_, {pid, _}} -> :erlang.trace(pid, true, flags) end)
    counted = run_rounds(workers, rounds(workers, n), 0, timeout)
    Enum.each(workers, fn {_, {pid, _}} -> :erlang.trace(pid, false, [:garbage_collection]) end)
    counted
  end

  # Timed samples with the allocation and GC figures of the counted ones (cycled: fewer of them).
  defp with_gc_figures(timed, counted) do
    timed
    |> Enum.zip(Stream.cycle(counted))
    |> Enum.map(fn {t, c} ->
      %{
        t
        | heap_words: c.heap_words,
          binary_bytes: c.binary_bytes,
          minor_gcs: c.minor_gcs,
          major_gcs: c.major_gcs
      }
    end)
  end

  @doc """
  The execution order of `rounds` rounds over `items`: every round runs each item once, and the
  starting item rotates by one each round, so no alternative always runs first (or right after
  the same neighbour). Returns `[{round, item}]`, rounds numbered from 1.

      iex> Binscope.Bench.Measure.rounds([:a, :b, :c], 2)
      [{1, :a}, {1, :b}, {1, :c}, {2, :b}, {2, :c}, {2, :a}]
  """
  @spec rounds([item], non_neg_integer()) :: [{pos_integer(), item}] when item: term()
  def rounds(_items, 0), do: []

  def rounds(items, n) do
    k = length(items)

    for r <- 1..n, i <- 0..(k - 1) do
      {r, Enum.at(items, rem(i + r - 1, k))}
    end
  end

  ## Workers

  defp start_worker(alt) do
    parent = self()

    {pid, mref} =
      :erlang.spawn_opt(
        fn -> worker_init(parent, alt) end,
        [:monitor | alt.spawn_opt]
      )

    send(pid, :go)
    {pid, mref}
  end

  defp worker_init(parent, alt) do
    receive do
      :go -> :ok
    end

    state =
      try do
        if alt.init, do: alt.init.(), else: nil
      catch
        kind, reason -> fail(parent, {:init_failed, alt.name, kind, reason, __STACKTRACE__})
      end

    # The counters' own cost: the minimum over a few empty runs.
    empty = for _ <- 1..5, do: elem(one_run(fn s -> s end, 1, nil, 1), 1)

    overhead = %{
      heap_words: empty |> Enum.map(& &1.heap_words) |> Enum.min(),
      reductions: empty |> Enum.map(& &1.reductions) |> Enum.min()
    }

    worker_loop(parent, alt, state, overhead)
  end

  defp worker_loop(parent, alt, state, overhead) do
    receive do
      {:run, from, ref} ->
        {state, sample} =
          try do
            one_run(alt.fun, arity(alt.fun), state, alt.batch)
          catch
            kind, reason -> fail(parent, {:run_failed, alt.name, kind, reason, __STACKTRACE__})
          end

        sample = %{
          sample
          | heap_words: max(sample.heap_words - overhead.heap_words, 0),
            reductions: max(sample.reductions - overhead.reductions, 0)
        }

        send(from, {ref, sample})
        worker_loop(parent, alt, state, overhead)

      :stop ->
        :ok
    end
  end

  defp fail(parent, reason) do
    send(parent, {:bench_worker_failed, self(), reason})
    exit(:normal)
  end

  defp arity(fun), do: elem(:erlang.fun_info(fun, :arity), 1)

  defp run_once(pid, mref, timeout) do
    ref = make_ref()
    send(pid, {:run, self(), ref})

    receive do
      {^ref, sample} ->
        sample

      {:bench_worker_failed, ^pid, reason} ->
        throw({:bench_failed, reason})

      {:DOWN, ^mref, :process, ^pid, reason} ->
        throw({:bench_failed, {:worker_died, reason}})
    after
      timeout -> throw({:bench_failed, {:timeout, timeout}})
    end
  end

  defp stop_worker(pid, mref) do
    send(pid, :stop)

    receive do
      {:DOWN, ^mref, :process, ^pid, _} -> :ok
    after
      5_000 ->
        Process.exit(pid, :kill)

        receive do
          {:DOWN, ^mref, :process, ^pid, _} -> :ok
        end
    end

    # Drop a failure report that raced with the stop.
    receive do
      {:bench_worker_failed, ^pid, _} -> :ok
    after
      0 -> :ok
    end
  end

  # One timed run of `batch` calls. The window for GC events opens before the first counter read
  # and closes before the last, so collections triggered by reading the counters at the end
  # fall outside it (see the moduledoc).
  defp one_run(fun, arity, state, batch) do
    Process.put(@metrics_key, %{})
    # Node-wide counters first and last: they allocate (`:erlang.memory/1` builds terms), so
    # they stay outside the window in which heap allocation and GCs are counted.
    {n0, _, _} = :erlang.statistics(:garbage_collection)
    vb0 = :erlang.memory(:binary)
    s0 = Binscope.Store.stats()
    w0 = :erlang.monotonic_time()
    g0 = GcTrace.sizes()
    {:reductions, r0} = Process.info(self(), :reductions)
    t0 = :erlang.monotonic_time()
    state = repeat(fun, arity, state, batch)
    t1 = :erlang.monotonic_time()
    g1 = GcTrace.sizes()
    {:reductions, r1} = Process.info(self(), :reductions)
    s1 = Binscope.Store.stats()
    vb1 = :erlang.memory(:binary)
    {n1, _, _} = :erlang.statistics(:garbage_collection)

    sample = %{
      time_ns: :erlang.convert_time_unit(t1 - t0, :native, :nanosecond),
      window: {w0, t1},
      g0: g0,
      g1: g1,
      reductions: r1 - r0,
      heap_words: elem(g1, 0) - elem(g0, 0),
      binary_bytes: elem(g1, 1) - elem(g0, 1),
      minor_gcs: 0,
      major_gcs: 0,
      node_gcs: n1 - n0,
      vm_binary_delta: vb1 - vb0,
      store_allocs: s1.allocs - s0.allocs,
      store_bytes_delta: s1.live_bytes - s0.live_bytes,
      custom: Process.get(@metrics_key, %{})
    }

    {state, sample}
  end

  defp repeat(_fun, _arity, state, 0), do: state

  defp repeat(fun, 0, state, n),
    do:
      (
        fun.()
        repeat(fun, 0, state, n - 1)
      )

  defp repeat(fun, 1, state, n), do: repeat(fun, 1, fun.(state), n - 1)

  @doc false
  # Summaries per call of a list of samples (each per run of `batch` calls).
  @spec summarize([sample(), ...], pos_integer()) :: map()
  def summarize(samples, batch) do
    per_call = fn key -> Enum.map(samples, &(Map.fetch!(&1, key) / batch)) end
    per_run = fn key -> Enum.map(samples, &Map.fetch!(&1, key)) end

    custom_keys = samples |> Enum.flat_map(&Map.keys(&1.custom)) |> Enum.uniq()

    %{
      time_ns: Stats.summary(per_call.(:time_ns)),
      reductions: Stats.median(per_call.(:reductions)),
      heap_words: Stats.median(per_call.(:heap_words)),
      binary_bytes: Stats.median(per_call.(:binary_bytes)),
      minor_gcs: Stats.median(per_run.(:minor_gcs)),
      major_gcs: Stats.median(per_run.(:major_gcs)),
      node_gcs: Stats.median(per_run.(:node_gcs)),
      vm_binary_delta: Stats.median(per_run.(:vm_binary_delta)),
      store_allocs: Stats.median(per_call.(:store_allocs)),
      store_bytes_delta: Stats.median(per_run.(:store_bytes_delta)),
      custom:
        Map.new(custom_keys, fn k ->
          values = for s <- samples, Map.has_key?(s.custom, k), do: s.custom[k]
          {k, Stats.summary(values)}
        end)
    }
  end
end
