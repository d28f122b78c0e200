defmodule Binscope.Bench do
  @moduledoc """
  A benchmark harness that runs inside ExUnit (or anywhere): warm-up, repeated runs, and per run
  the figures a memory decision needs, not only time.

      {:ok, result} = Binscope.Bench.run("copy 1 MiB", fn -> :binary.copy(src) end, runs: 20)
      result.time_ns.median   # ns per call
      result.heap_words       # words allocated on the process heap per call
      result.binary_bytes     # refc binary bytes created per call (VM and store)

      {:ok, cmp} =
        Binscope.Bench.compare(
          [{":binary.copy", fn -> :binary.copy(src) end}, {"Store.put", fn -> Binscope.Store.put!(src) end}],
          runs: 10, batch: 100, bytes: byte_size(src)
        )
      cmp.ratios["Store.put"].speed   # baseline time / put time

  Each alternative runs in its own long-lived worker process, so its heap grows into a steady
  state across runs and its counters are its own. `compare/2` deals runs round-robin (one run of
  each alternative per round, the starting alternative rotating), so drift of a shared, noisy
  machine hits every alternative alike; read the ratios. What each figure means and how it is
  measured: `Binscope.Bench.Result` and `Binscope.Bench.Measure`.

  A benchmarked function is either `fun/0`, or `fun/1` threading a state made by `init:` (the
  state lives in the worker across runs: e.g. a ring of live binaries for a steady cycle).
  Functions may call `record/2` to report their own per-run figures.

  Output: `Binscope.Bench.Report` renders console tables and writes markdown, CSV and SVG files.

  ## Options

    * `:runs` - measured runs per alternative (default 10);
    * `:warmup` - runs made and discarded first (default 2);
    * `:batch` - calls per run (default 1); figures are reported per call;
    * `:init` - `(-> state)`, run once in the worker; the function then gets and returns it;
    * `:bytes` - bytes handled per call, to report throughput;
    * `:spawn_opt` - options for the worker's `:erlang.spawn_opt/2` (e.g. `fullsweep_after: 0`);
    * `:trace_gc` - trace the worker's GCs for allocation and GC counts (default `true`);
    * `:timeout` - milliseconds one run may take (default 120_000);
    * `:baseline` - (`compare/2`) the name ratios are taken against (default the first).

  `:init`, `:batch`, `:bytes` and `:spawn_opt` may also be given per alternative:
  `{name, fun, opts}`.
  """

  alias Binscope.Bench.{Comparison, Measure, Result, Stats}

  @typedoc "A function to measure: `fun/0`, or `fun/1` taking and returning the `init:` state."
  @type bench_fun :: (... -> term())

  @typedoc "An alternative of `compare/2`."
  @type alternative :: {String.t(), bench_fun()} | {String.t(), bench_fun(), keyword()}

  @typedoc "Why a benchmark could not complete."
  @type reason ::
          {:init_failed | :run_failed, String.t(), atom(), term(), list()}
          | {:worker_died, term()}
          | {:timeout, pos_integer()}

  @alt_keys [:init, :batch, :bytes, :spawn_opt]
  @session_keys [:runs, :warmup, :trace_gc, :timeout, :baseline]

  @doc """
  Measures `fun` (see the moduledoc for options). Returns `{:ok, result}`, or
  `{:error, reason}` when the function raised, exited or timed out (the worker is stopped).
  Bad options raise `ArgumentError`.
  """
  @spec run(String.t(), bench_fun(), keyword()) :: {:ok, Result.t()} | {:error, reason()}
  def run(name, fun, opts \\ []) do
    case compare([{name, fun}], opts) do
      {:ok, %Comparison{results: [result]}} -> {:ok, result}
      error -> error
    end
  end

  @doc "Like `run/3`, raising `Binscope.Error` when the benchmark fails."
  @spec run!(String.t(), bench_fun(), keyword()) :: Result.t()
  def run!(name, fun, opts \\ []), do: bang(run(name, fun, opts))

  @doc """
  Runs `alternatives` interleaved round-robin in one session and reports each with ratios
  against the baseline (see `Binscope.Bench.Comparison`). Names must be distinct strings.
  """
  @spec compare([alternative(), ...], keyword()) :: {:ok, Comparison.t()} | {:error, reason()}
  def compare(alternatives, opts \\ []) do
    {alts, session, baseline} = validate!(alternatives, opts)

    case Measure.session(alts, session) do
      {:ok, samples, left_behind} ->
        results = Enum.map(alts, &result(&1, Map.fetch!(samples, &1.name), session[:runs]))
        {:ok, comparison(results, baseline, left_behind)}

      {:error, _} = error ->
        error
    end
  end

  @doc "Like `compare/2`, raising `Binscope.Error` when the benchmark fails."
  @spec compare!([alternative(), ...], keyword()) :: Comparison.t()
  def compare!(alternatives, opts \\ []), do: bang(compare(alternatives, opts))

  @doc """
  Records a figure of the current run (e.g. a peak memory a scenario observed), from inside a
  benchmarked function. The result's `custom` map holds a `Binscope.Bench.Stats.summary/1` per
  key over the runs; when a run records a key several times, the last value counts. Outside a
  benchmark it just stores the value in the process dictionary.
  """
  @spec record(term(), number()) :: :ok
  def record(key, value) when is_number(value) do
    Process.put(
      Measure.metrics_key(),
      Map.put(Process.get(Measure.metrics_key(), %{}), key, value)
    )

    :ok
  end

  def record(_key, value),
    do: raise(ArgumentError, "record/2 takes a number, got: #{inspect(value)}")

  @doc """
  Kills a benchmark's population and waits until every process is gone, so the binaries they
  held are freed before whatever runs next measures memory.
  """
  @spec kill_all([pid()]) :: :ok
  def kill_all(pids) do
    refs = Enum.map(pids, &Process.monitor/1)
    Enum.each(pids, &Process.exit(&1, :kill))
    for ref <- refs, do: receive(do: ({:DOWN, ^ref, :process, _, _} -> :ok))
    :ok
  end

  @doc """
  Builds a comparison from results (pure; `compare/2` uses it): ratios of every result against
  the one named `baseline`.
  """
  @spec comparison([Result.t(), ...], String.t(), map()) :: Comparison.t()
  def comparison(results, baseline, left_behind \\ %{}) do
    base =
      Enum.find(results, &(&1.name == baseline)) ||
        raise ArgumentError, "baseline #{inspect(baseline)} is not among the results"

    ratios =
      Map.new(results, fn r ->
        {r.name,
         %{
           speed: Stats.ratio(base.time_ns.median, r.time_ns.median),
           heap_words: Stats.ratio(r.heap_words, base.heap_words),
           binary_bytes: Stats.ratio(r.binary_bytes, base.binary_bytes),
           reductions: Stats.ratio(r.reductions, base.reductions)
         }}
      end)

    %Comparison{baseline: baseline, results: results, ratios: ratios, left_behind: left_behind}
  end

  defp result(alt, samples, runs) do
    s = Measure.summarize(samples, alt.batch)

    throughput = if alt.bytes && s.time_ns.median > 0, do: alt.bytes / (s.time_ns.median / 1.0e9)

    struct!(
      Result,
      Map.merge(s, %{
        name: alt.name,
        runs: runs,
        batch: alt.batch,
        bytes: alt.bytes,
        throughput: throughput,
        samples: samples
      })
    )
  end

  defp validate!(alternatives, opts) do
    unless is_list(alternatives) and alternatives != [],
      do:
        raise(
          ArgumentError,
          "alternatives must be a non-empty list, got: #{inspect(alternatives)}"
        )

    unless Keyword.keyword?(opts),
      do: raise(ArgumentError, "options must be a keyword list, got: #{inspect(opts)}")

    case Keyword.keys(opts) -- (@alt_keys ++ @session_keys) do
      [] -> :ok
      unknown -> raise ArgumentError, "unknown options: #{inspect(unknown)}"
    end

    alts = Enum.map(alternatives, &alternative!(&1, Keyword.take(opts, @alt_keys)))
    names = Enum.map(alts, & &1.name)

    if length(Enum.uniq(names)) != length(names),
      do: raise(ArgumentError, "alternative names must be distinct, got: #{inspect(names)}")

    session = [
      runs: pos_int!(opts, :runs, 10),
      warmup: non_neg_int!(opts, :warmup, 2),
      timeout: pos_int!(opts, :timeout, 120_000),
      trace_gc: bool!(opts, :trace_gc, true)
    ]

    baseline = Keyword.get(opts, :baseline, hd(names))

    unless baseline in names,
      do: raise(ArgumentError, "baseline #{inspect(baseline)} is not an alternative's name")

    {alts, session, baseline}
  end

  defp alternative!({name, fun}, defaults), do: alternative!({name, fun, []}, defaults)

  defp alternative!({name, fun, alt_opts}, defaults) when is_binary(name) and is_list(alt_opts) do
    case Keyword.keys(alt_opts) -- @alt_keys do
      [] -> :ok
      unknown -> raise ArgumentError, "unknown options for #{inspect(name)}: #{inspect(unknown)}"
    end

    o = Keyword.merge(defaults, alt_opts)
    init = Keyword.get(o, :init)

    cond do
      is_function(fun, 0) and is_nil(init) -> :ok
      is_function(fun, 1) and is_function(init, 0) -> :ok
      true -> raise ArgumentError, "#{inspect(name)}: give fun/0, or fun/1 with init: fun/0"
    end

    bytes = Keyword.get(o, :bytes)

    unless is_nil(bytes) or (is_integer(bytes) and bytes >= 0),
      do: raise(ArgumentError, "bytes must be a non-negative integer, got: #{inspect(bytes)}")

    spawn_opt = Keyword.get(o, :spawn_opt, [])

    unless is_list(spawn_opt),
      do: raise(ArgumentError, "spawn_opt must be a list, got: #{inspect(spawn_opt)}")

    %{
      name: name,
      fun: fun,
      init: init,
      batch: pos_int!(o, :batch, 1),
      bytes: bytes,
      spawn_opt: spawn_opt
    }
  end

  defp alternative!(other, _),
    do:
      raise(
        ArgumentError,
        "an alternative is {name_string, fun} or {name, fun, opts}, got: #{inspect(other)}"
      )

  defp pos_int!(opts, key, default) do
    case Keyword.get(opts, key, default) do
      n when is_integer(n) and n > 0 -> n
      other -> raise ArgumentError, "#{key} must be a positive integer, got: #{inspect(other)}"
    end
  end

  defp non_neg_int!(opts, key, default) do
    case Keyword.get(opts, key, default) do
      n when is_integer(n) and n >= 0 ->
        n

      other ->
        raise ArgumentError, "#{key} must be a non-negative integer, got: #{inspect(other)}"
    end
  end

  defp bool!(opts, key, default) do
    case Keyword.get(opts, key, default) do
      b when is_boolean(b) -> b
      other -> raise ArgumentError, "#{key} must be a boolean, got: #{inspect(other)}"
    end
  end

  defp bang({:ok, value}), do: value

  defp bang({:error, reason}),
    do: raise(Binscope.Error, reason: reason, message: "benchmark failed: #{inspect(reason)}")
end
