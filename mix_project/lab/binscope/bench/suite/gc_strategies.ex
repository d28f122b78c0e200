defmodule Binscope.Bench.Suite.GcStrategies do
  @moduledoc """
  Suite 2, GC strategies in a message router that handles large binaries.

  A producer sends packets (fresh refc binaries of `packet_size` bytes) to a router; the router
  reads a header, forwards a 16-byte copy of it to a sink and forgets the packet. The packet is
  garbage the moment it is routed, but the router's heap holds a ProcBin for it until the router
  is collected: how long that takes is what the strategies change.

    * `none` - no intervention;
    * `gc every N` - `:erlang.garbage_collect/0` every `gc_every` messages;
    * `hibernate` - `{:noreply, state, :hibernate}` after each message;
    * `hibernate_after` - the GenServer option `hibernate_after: ms`;
    * `fullsweep_after 0` - every collection of the router is a full sweep;
    * `off-heap queue` - `message_queue_data: :off_heap`.

  Traffic shapes (sequences of bursts): `steady` (a few packets every millisecond), `bursty`
  (bursts of hundreds, then a pause) and `idle` (one burst, then a long silence). Each cell
  reports throughput (packets / total time from each burst's first send to its last delivery),
  delivery latency (p50, p99), binary memory above the pre-run baseline sampled every
  millisecond (peak and mean, over the whole run including the pauses), what is still held at
  the end of the final silence, and the router's reductions per packet. Strategies are
  interleaved round-robin (`Binscope.Bench.compare/2`), medians over `runs`.

  The producer runs in its own process with `fullsweep_after: 0` and collects every 32 sends,
  so the binaries it made do not linger on its side; the sink only receives heap binaries.
  """

  alias Binscope.Bench
  alias Binscope.Bench.Suite.GcStrategies.Decisions

  @kib 1024

  @defaults [
    packet_size: 64 * @kib,
    runs: 3,
    warmup: 0,
    gc_every: 64,
    hibernate_after_ms: 20,
    shapes: [
      steady: [bursts: 1000, burst: 2, gap_ms: 1, tail_ms: 100],
      bursty: [bursts: 5, burst: 400, gap_ms: 100, tail_ms: 100],
      idle: [bursts: 1, burst: 400, gap_ms: 0, tail_ms: 500]
    ]
  ]

  # The strategies in report order, with their names.
  @names [
    none: "none",
    gc_every: "gc every N",
    hibernate: "hibernate",
    hibernate_after: "hibernate_after",
    fullsweep0: "fullsweep_after 0",
    off_heap: "off-heap queue"
  ]
  @strategies Keyword.keys(@names)

  @doc "Options for a run of a few seconds that checks the code paths, not the speed."
  @spec smoke_opts() :: keyword()
  def smoke_opts do
    [
      packet_size: 4 * @kib,
      runs: 1,
      gc_every: 4,
      hibernate_after_ms: 5,
      shapes: [
        steady: [bursts: 5, burst: 2, gap_ms: 1, tail_ms: 5],
        bursty: [bursts: 2, burst: 10, gap_ms: 5, tail_ms: 5],
        idle: [bursts: 1, burst: 10, gap_ms: 0, tail_ms: 20]
      ]
    ]
  end

  @doc "The strategies' names, in report order."
  @spec strategies() :: [String.t()]
  def strategies, do: Enum.map(@strategies, &name/1)

  @doc """
  Runs every strategy under every shape. Returns `%{cells: %{shape => comparison},
  decisions: rows, report: report}`; each comparison's results carry the cell figures in
  `custom` (`:throughput`, `:p50_us`, `:p99_us`, `:peak_bytes`, `:mean_bytes`, `:held_bytes`,
  `:reductions_per_msg`, `:delivered`).
  """
  @spec run(keyword()) :: map()
  def run(opts \\ []) do
    o = Keyword.merge(@defaults, opts)

    cells =
      for {shape, spec} <- o[:shapes] do
        alts = for s <- @strategies, do: {name(s), fn -> cell(s, spec, o) end}
        {shape, Bench.compare!(alts, runs: o[:runs], warmup: o[:warmup], trace_gc: false)}
      end

    decisions = Decisions.decide(cells)
    %{cells: cells, decisions: decisions, report: Decisions.report(cells, decisions, o)}
  end

  defp name(strategy), do: Keyword.fetch!(@names, strategy)

  ## One cell: one strategy under one traffic shape

  defp cell(strategy, spec, o) do
    total = spec[:bursts] * spec[:burst]
    :erlang.garbage_collect()
    base = :erlang.memory(:binary)
    me = self()

    sink = spawn_link(fn -> sink_loop(me, total, []) end)
    router = start_router(strategy, sink, o)
    {:reductions, red0} = Process.info(router, :reductions)
    sampler = spawn_link(fn -> sampler_loop(base, 0, 0, 0) end)

    producer =
      :erlang.spawn_opt(fn -> produce(me, router, spec, o[:packet_size]) end, [
        :link,
        fullsweep_after: 0
      ])

    starts =
      receive do
        {:produced, ^producer, starts} -> starts
      end

    deliveries =
      receive do
        {:delivered, ^sink, d} -> d
      end

    Process.sleep(spec[:tail_ms])
    held = :erlang.memory(:binary) - base
    {:reductions, red1} = Process.info(router, :reductions)
    send(sampler, {:stop, self()})

    {peak, mean} =
      receive do
        {:sampled, ^sampler, peak, mean} -> {peak, mean}
      end

    GenServer.stop(router)
    stop(sink)
    stop(sampler)
    stop(producer)

    # deliveries: [{index, sent_at, delivered_at}] in delivery order
    by_index = deliveries |> Map.new(fn {i, s, d} -> {i, {s, d}} end)
    busy = busy_time(starts, by_index, spec[:burst])
    lat = Enum.map(deliveries, fn {_, s, d} -> d - s end)

    Bench.record(:delivered, map_size(by_index))
    Bench.record(:throughput, if(busy > 0, do: total / (busy / 1.0e9), else: 0.0))
    Bench.record(:p50_us, Bench.Stats.percentile(lat, 50) / 1000)
    Bench.record(:p99_us, Bench.Stats.percentile(lat, 99) / 1000)
    Bench.record(:peak_bytes, peak)
    Bench.record(:mean_bytes, mean)
    Bench.record(:held_bytes, held)
    Bench.record(:reductions_per_msg, (red1 - red0) / total)
    :ok
  end

  # Sum over bursts of (last delivery of the burst - first send of the burst), in ns.
  defp busy_time(starts, by_index, burst) do
    starts
    |> Enum.with_index()
    |> Enum.map(fn {start, b} ->
      last = (b + 1) * burst - 1
      {_sent, delivered} = Map.fetch!(by_index, last)
      delivered - start
    end)
    |> Enum.sum()
  end

  # Stops a linked helper and waits until it is gone (so its memory is freed before the next
  # cell or test measures).
  defp stop(pid) do
    ref = Process.monitor(pid)
    send(pid, :stop)

    receive do
      {:DOWN, ^ref, :process, ^pid, _} -> :ok
    end
  end

  defp produce(driver, router, spec, size) do
    template = :binary.copy(<<7>>, size)

    starts =
      for b <- 0..(spec[:bursts] - 1) do
        if b > 0 and spec[:gap_ms] > 0, do: Process.sleep(spec[:gap_ms])
        start = now()

        for k <- 0..(spec[:burst] - 1) do
          i = b * spec[:burst] + k
          send(router, {:packet, i, now(), :binary.copy(template)})
          if rem(i, 32) == 31, do: :erlang.garbage_collect()
        end

        start
      end

    :erlang.garbage_collect()
    send(driver, {:produced, self(), starts})

    receive do
      :stop -> :ok
    end
  end

  defp sink_loop(driver, 0, acc) do
    send(driver, {:delivered, self(), Enum.reverse(acc)})

    receive do
      :stop -> :ok
    end
  end

  defp sink_loop(driver, left, acc) do
    receive do
      {:routed, i, sent, _kind, _hdr} -> sink_loop(driver, left - 1, [{i, sent, now()} | acc])
    end
  end

  defp sampler_loop(base, peak, sum, n) do
    receive do
      {:stop, from} ->
        send(from, {:sampled, self(), peak, if(n > 0, do: sum / n, else: 0.0)})

        receive do
          :stop -> :ok
        end
    after
      1 ->
        v = max(:erlang.memory(:binary) - base, 0)
        sampler_loop(base, max(peak, v), sum + v, n + 1)
    end
  end

  defp now, do: System.monotonic_time(:nanosecond)

  defp start_router(strategy, sink, o) do
    {gen_opts, spawn_opt} =
      case strategy do
        :hibernate_after -> {[hibernate_after: o[:hibernate_after_ms]], []}
        :fullsweep0 -> {[], [fullsweep_after: 0]}
        :off_heap -> {[], [message_queue_data: :off_heap]}
        _ -> {[], []}
      end

    {:ok, pid} =
      GenServer.start(__MODULE__.Router, {strategy, sink, o[:gc_every]}, [
        {:spawn_opt, spawn_opt} | gen_opts
      ])

    pid
  end
end
