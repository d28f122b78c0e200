defmodule Binscope.Demo.Kit do
  @moduledoc """
  Shared tools of the demos: per-process figures, a background sampler for memory-over-time
  charts, progress lines and chart writing.

  Options every demo accepts (besides its own sizes):

    * `:report_dir` - where charts go (default `Binscope.Lab.OutputDir.dir/0`);
    * `:quiet` - `true` to print no progress lines (the tests use it).
  """

  alias Binscope.Render.Format

  @word :erlang.system_info(:wordsize)

  @doc "The VM's word size in bytes."
  @spec word() :: pos_integer()
  def word, do: @word

  @doc """
  One process's figures in bytes, from `Binscope.processes/1`: `heap` (total heap: young and
  old generation blocks plus heap fragments), `old_heap` (old generation in use), `memory`
  (`process_info(:memory)`), `bin_bytes`/`bin_refs` (the naive sum and count of
  `process_info(:binary)`: store binaries at the few dozen bytes the VM lists), `bin_uss` (bytes of the
  binaries only this process references, store binaries at their real size), `bin_pss` (its
  fair share of every binary it references), `native_store` (bytes of `Binscope.Store` binaries
  it references, at real size) and `minor_gcs` (since the last major GC). `nil` for a dead
  process.
  """
  @spec proc(pid()) :: map() | nil
  def proc(pid), do: Map.get(procs([pid]), pid)

  @doc "`proc/1` for several processes in one `Binscope.processes/1` scan: `%{pid => figures}`."
  @spec procs([pid()]) :: %{pid() => map()}
  def procs(pids) do
    {:ok, records} = Binscope.processes(pids: pids)
    Map.new(records, &{&1.pid, figures(&1)})
  end

  defp figures(r) do
    %{
      heap: r.total_heap_size,
      old_heap: r.old_heap_size,
      memory: r.memory,
      bin_bytes: r.binary_bytes,
      bin_refs: r.binary_refs,
      bin_uss: r.binary_uss,
      bin_pss: r.binary_pss,
      native_store: r.native_store_bytes,
      minor_gcs: r.minor_gcs
    }
  end

  @doc "Prints a progress line unless `opts[:quiet]`."
  @spec progress(keyword(), iodata()) :: :ok
  def progress(opts, line) do
    unless opts[:quiet], do: IO.puts(["  .. ", line])
    :ok
  end

  @doc "The running OTP release as an integer, e.g. `27`."
  @spec otp() :: pos_integer()
  def otp, do: :erlang.system_info(:otp_release) |> List.to_integer()

  @doc "Microseconds since `t0` (a `System.monotonic_time/0` value)."
  @spec us_since(integer()) :: integer()
  def us_since(t0),
    do: System.convert_time_unit(System.monotonic_time() - t0, :native, :microsecond)

  @doc """
  Starts a sampler: every `interval_ms` it calls `fun` (zero-arity, returning a map of named
  numbers) and records the result with the time in ms since start. Mark moments with
  `event/2`; `stop/1` returns `%{samples: [{t_ms, map}], events: [{t_ms, label}]}`.
  """
  @spec sampler((... -> map()), pos_integer()) :: pid()
  def sampler(fun, interval_ms \\ 5) do
    parent = self()
    t0 = System.monotonic_time()

    pid =
      spawn_link(fn ->
        send(parent, {:sampler_ready, self()})
        sample_loop(fun, interval_ms, t0, [{ms(t0), fun.()}], [], nil)
      end)

    receive do: ({:sampler_ready, ^pid} -> pid)
  end

  # `due` is when the next periodic sample is due (monotonic ms): GC trace messages can arrive
  # more often than `interval`, so a plain `after` would never fire while a process is busy.
  defp sample_loop(fun, interval, t0, samples, events, due) do
    now = System.monotonic_time(:millisecond)
    due = due || now + interval

    {samples, due} =
      if now >= due, do: {[{ms(t0), fun.()} | samples], now + interval}, else: {samples, due}

    receive do
      {:event, label} ->
        # An event is also a sample, so the chart shows the value right at the event.
        sample_loop(
          fun,
          interval,
          t0,
          [{ms(t0), fun.()} | samples],
          [{ms(t0), label} | events],
          due
        )

      {:trace, _pid, :gc_major_start, _info} ->
        # The sampler is the GC tracer when a demo asks (`trace_gc/2`): majors become events.
        Process.put(:major_gcs, Process.get(:major_gcs, 0) + 1)
        sample_loop(fun, interval, t0, samples, [{ms(t0), "major GC"} | events], due)

      {:trace, _pid, :gc_minor_start, _info} ->
        Process.put(:minor_gcs, Process.get(:minor_gcs, 0) + 1)
        sample_loop(fun, interval, t0, samples, events, due)

      {:trace, _pid, _other, _info} ->
        sample_loop(fun, interval, t0, samples, events, due)

      {:gc_counts, from, ref} ->
        send(from, {ref, {Process.get(:minor_gcs, 0), Process.get(:major_gcs, 0)}})
        sample_loop(fun, interval, t0, samples, events, due)

      {:sample, from, ref} ->
        send(from, {ref, :ok})
        sample_loop(fun, interval, t0, [{ms(t0), fun.()} | samples], events, due)

      {:stop, from, ref} ->
        samples = [{ms(t0), fun.()} | samples]
        send(from, {ref, %{samples: Enum.reverse(samples), events: Enum.reverse(events)}})
    after
      max(due - now, 0) -> sample_loop(fun, interval, t0, samples, events, due)
    end
  end

  defp ms(t0),
    do: System.convert_time_unit(System.monotonic_time() - t0, :native, :microsecond) / 1000

  @doc """
  Makes `sampler` the tracer of `pid`'s garbage collections: it counts minor and major GCs
  (`gc_counts/2`) and records each major GC as an event.
  """
  @spec trace_gc(pid(), pid()) :: :ok
  def trace_gc(sampler, pid) do
    1 = :erlang.trace(pid, true, [:garbage_collection, {:tracer, sampler}])
    :ok
  end

  @doc "`{minor, major}` GCs of `pid` seen so far by its tracer `sampler` (all delivered)."
  @spec gc_counts(pid(), pid()) :: {non_neg_integer(), non_neg_integer()}
  def gc_counts(sampler, pid) do
    tref = :erlang.trace_delivered(pid)
    receive do: ({:trace_delivered, ^pid, ^tref} -> :ok)
    ref = make_ref()
    send(sampler, {:gc_counts, self(), ref})
    receive do: ({^ref, counts} -> counts)
  end

  @doc "Records an event (and a sample) in the sampler now."
  @spec event(pid(), String.t()) :: :ok
  def event(sampler, label) do
    send(sampler, {:event, label})
    sample_now(sampler)
  end

  @doc "Takes a sample now and waits for it."
  @spec sample_now(pid()) :: :ok
  def sample_now(sampler) do
    ref = make_ref()
    send(sampler, {:sample, self(), ref})
    receive do: ({^ref, :ok} -> :ok)
  end

  @doc "Stops the sampler and returns its samples and events."
  @spec stop(pid()) :: %{samples: list(), events: list()}
  def stop(sampler) do
    ref = make_ref()
    send(sampler, {:stop, self(), ref})
    receive do: ({^ref, result} -> result)
  end

  @doc """
  Writes a memory-over-time line chart of `recording` (from `stop/1`) as `name` in the report
  directory and returns its path. `series` maps a sample key to a series name; values are
  divided by `unit` (default 1 MiB). Missing values (a dead process) are skipped.
  """
  @spec chart(keyword(), String.t(), String.t(), map(), [{atom(), String.t()}], keyword()) ::
          String.t()
  def chart(opts, name, title, recording, series, chart_opts \\ []) do
    {unit, unit_name} = Keyword.get(chart_opts, :unit, {1024 * 1024, "MiB"})

    lines =
      for {key, label} <- series do
        points =
          for {t, sample} <- recording.samples,
              is_number(sample[key]),
              do: {t, sample[key] / unit}

        %{name: label, points: points}
      end

    events = for {t, label} <- recording.events, do: %{x: t, label: label}
    path = report_path(opts, name)

    Binscope.Chart.line!(path, %{
      title: title,
      x_label: Keyword.get(chart_opts, :x_label, "time (ms)"),
      y_label: Keyword.get(chart_opts, :y_label, "memory (#{unit_name})"),
      series: lines,
      events: events
    })

    path
  end

  @doc "The path of report file `name` (under `opts[:report_dir]` or `Binscope.Lab.OutputDir.dir/0`)."
  @spec report_path(keyword(), String.t()) :: String.t()
  def report_path(opts, name) do
    case opts[:report_dir] do
      nil -> Binscope.Lab.OutputDir.path(name)
      dir -> Path.join(dir, name)
    end
  end

  @doc """
  How the VM's own tools list a store binary on this node, for the demos' prose: at the few dozen
  bytes of its magic binary, or at its real size where `Binscope.Store.GcPressure` patches it
  (OTP 27+).
  """
  @spec store_listing() :: String.t()
  def store_listing do
    if Binscope.Store.GcPressure.listed_at_real_size?(),
      do: "store binaries at their real size (OTP 27+: the GC pressure patch writes it there)",
      else: "store binaries at the few dozen bytes of their magic binary"
  end

  @doc "Bytes for tables (`Binscope.Render.Format.bytes/1`)."
  @spec b(integer()) :: String.t()
  def b(n), do: Format.bytes(n)

  @doc "A percentage with one decimal, e.g. `\"99.8%\"`."
  @spec pct(number(), number()) :: String.t()
  def pct(_part, whole) when whole == 0, do: "n/a"
  def pct(part, whole), do: :erlang.float_to_binary(100 * part / whole, decimals: 1) <> "%"

  @doc "Median of a non-empty list of numbers."
  @spec median([number()]) :: number()
  def median(xs) do
    s = Enum.sort(xs)
    Enum.at(s, div(length(s), 2))
  end

  @doc "Sends `msg` to `pid` and waits for `{ref, reply}` (a minimal call for plain processes)."
  @spec call(pid(), term()) :: term()
  def call(pid, msg) do
    ref = make_ref()
    send(pid, {:call, self(), ref, msg})
    receive do: ({^ref, reply} -> reply)
  end

  @doc "Stops `pid` with `:kill` and waits for its exit."
  @spec kill(pid()) :: :ok
  def kill(pid) do
    ref = Process.monitor(pid)
    Process.exit(pid, :kill)
    receive do: ({:DOWN, ^ref, :process, ^pid, _} -> :ok)
  end

  @doc """
  Waits (up to `timeout_ms`) until `fun` (zero-arity) returns a truthy value; returns the last
  value.
  """
  @spec eventually((... -> term()), non_neg_integer()) :: term()
  def eventually(fun, timeout_ms \\ 2_000) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    do_eventually(fun, deadline)
  end

  defp do_eventually(fun, deadline) do
    v = fun.()

    if v || System.monotonic_time(:millisecond) > deadline do
      v
    else
      Process.sleep(5)
      do_eventually(fun, deadline)
    end
  end
end
