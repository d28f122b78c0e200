defmodule Binscope.Demo.Tuning do
  @moduledoc """
  Process flags against the leaky workload, side by side. A process receives a burst of
  messages carrying 64 KiB binaries and keeps the last 20 in a window (so they survive GCs and
  reach the old generation before being dropped), then goes idle. The same burst runs under:

    * the defaults;
    * `fullsweep_after: 0` - every GC is a major one, so dropped binaries never linger in the
      old generation;
    * `min_bin_vheap_size: 2_048` words (16 KiB, default 46,422 words) - the binary budget that
      triggers a GC starts small;
    * `message_queue_data: :off_heap` - queued messages live outside the heap, so a long queue
      does not grow it (nor make each GC scan it).

  Reported per setting: bytes of binaries referenced at the peak and when idle afterwards,
  minor and major GCs (GC tracing), and the burst's processing time.
  """
  @behaviour Binscope.Demo

  import Binscope.Demo.Kit, only: [b: 1]
  alias Binscope.Demo.Kit
  alias Binscope.Render.Table

  @variants [
    {"defaults", []},
    {"fullsweep_after: 0", [fullsweep_after: 0]},
    {"min_bin_vheap_size: 2048", [min_bin_vheap_size: 2_048]},
    {"message_queue_data: :off_heap", [message_queue_data: :off_heap]}
  ]

  @window 20

  @impl true
  def name, do: :tuning

  @impl true
  def title,
    do: "fullsweep_after, min_bin_vheap_size and off-heap message queues on a leaky workload"

  @impl true
  def run(opts \\ []) do
    scale = Keyword.get(opts, :scale, 1.0)
    count = max(round(1_500 * scale), 100)
    size = Keyword.get(opts, :size, 64 * 1024)

    results =
      for {name, flags} <- @variants do
        Kit.progress(opts, "#{name}: burst of #{count} x #{b(size)}")
        Map.put(variant(flags, count, size), :name, name)
      end

    path = Kit.report_path(opts, "tuning.svg")

    Binscope.Chart.line!(path, %{
      title: "Tuning: binaries referenced by the leaky process (burst, then idle)",
      x_label: "time since burst start (ms)",
      y_label: "binary bytes referenced (MiB)",
      series: Enum.map(results, &%{name: &1.name, points: mib_points(&1.curve)}),
      events: Enum.map(results, &%{x: &1.burst_ms, label: "#{&1.name}: burst done"})
    })

    bars = Kit.report_path(opts, "tuning_idle.svg")

    Binscope.Chart.bars!(bars, %{
      title: "Binary bytes still referenced when idle after the burst",
      y_label: "MiB",
      bars: for(r <- results, do: {r.name, r.idle_bytes / 1_048_576})
    })

    Kit.progress(opts, ["charts: ", path, ", ", bars])
    %{count: count, size: size, window: @window, results: results, chart: path, bars_chart: bars}
  end

  defp mib_points(curve), do: for({t, v} <- curve, is_number(v), do: {t, v / 1_048_576})

  defp variant(flags, count, size) do
    pid = :erlang.spawn_opt(fn -> loop([], 0) end, flags)
    sampler = Kit.sampler(fn -> %{bin: (Kit.proc(pid) || %{})[:bin_bytes]} end, 10)
    Kit.trace_gc(sampler, pid)
    t0 = System.monotonic_time()
    for i <- 1..count, do: send(pid, {:payload, :binary.copy(<<rem(i, 250) + 1>>, size)})
    :ok = Kit.call(pid, :sync)
    burst_us = Kit.us_since(t0)
    Kit.event(sampler, "burst done")
    Process.sleep(100)
    idle = Kit.proc(pid)
    {minor, major} = Kit.gc_counts(sampler, pid)
    Kit.kill(pid)
    rec = Kit.stop(sampler)
    curve = for {t, s} <- rec.samples, do: {t, s.bin}
    peak = curve |> Enum.map(&elem(&1, 1)) |> Enum.filter(&is_number/1) |> Enum.max(fn -> 0 end)

    %{
      flags: flags,
      burst_ms: burst_us / 1000,
      idle_bytes: idle.bin_bytes,
      peak_bytes: max(peak, idle.bin_bytes),
      minor_gcs: minor,
      major_gcs: major,
      curve: curve
    }
  end

  defp loop(window, n) do
    receive do
      {:payload, bin} ->
        # Keep the last @window payloads; older ones are dropped (garbage).
        window = Enum.take([bin | window], @window)
        loop(window, n + 1)

      {:call, from, ref, :sync} ->
        send(from, {ref, :ok})
        loop(window, n)
    end
  end

  @impl true
  def render(r) do
    rows =
      for x <- r.results do
        [x.name, b(x.peak_bytes), b(x.idle_bytes), x.minor_gcs, x.major_gcs, round(x.burst_ms)]
      end

    [d | _] = r.results
    best = Enum.min_by(r.results, & &1.idle_bytes)

    [
      "Burst of #{r.count} x #{b(r.size)}; the process needs only its window of #{r.window} ",
      "(#{b(r.window * r.size)}).\n",
      Table.render(
        [
          "setting",
          "peak referenced (10 ms samples)",
          "idle referenced",
          "minor GCs",
          "major GCs",
          "burst ms"
        ],
        rows
      ),
      "\nIdle after the burst: defaults keep #{b(d.idle_bytes)} referenced; the lowest is ",
      "#{best.name} with #{b(best.idle_bytes)}. More GCs cost CPU: see the GC counts and burst times ",
      "(one run on a shared machine; small differences in ms are noise).\n",
      "Charts: #{r.chart}, #{r.bars_chart}\n"
    ]
  end
end
