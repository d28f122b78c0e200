defmodule Binscope.Bench.Suite.Scan do
  @moduledoc """
  Suite 3, scan costs: `Binscope.processes/1`, `Binscope.top/2` and `Binscope.leaks/1` in each
  mode (`:dry_run`, `:targeted`, `:full`) on a node with 10k and 100k extra processes.

  Population: every process holds one unique 128-byte refc binary and waits; every 100th also
  referenced 16 binaries of 4 KiB that it has dropped but not yet collected (what a leak scan
  finds). Reported per operation: time per call and per process, and what the scan costs the
  other processes: the lateness of a probe process that sleeps 1 ms in a loop (how late it
  runs after its timer fired), during the scan, beside the same probe on the idle node.
  Operations are interleaved round-robin (`Binscope.Bench.compare/2`). The first collecting run
  (`:targeted` or `:full`) frees the planted garbage, so later runs find less to reclaim; their
  cost is the scan and the collections, which stay.
  """

  alias Binscope.Bench
  alias Binscope.Bench.Report

  @defaults [counts: [10_000, 100_000], runs: 3, warmup: 0, leak_every: 100]

  @doc "Options for a run of about a second that checks the code paths, not the speed."
  @spec smoke_opts() :: keyword()
  def smoke_opts, do: [counts: [300], runs: 1, warmup: 0, leak_every: 10]

  @doc "The operations measured, in report order."
  @spec operations() :: [String.t()]
  def operations, do: Enum.map(ops(), &elem(&1, 0))

  defp ops do
    [
      {"processes()", fn -> Binscope.processes!() end},
      {"top(10, by: :binary_pss)", fn -> Binscope.top!(10, by: :binary_pss) end},
      {"leaks(mode: :dry_run)", fn -> Binscope.leaks!(mode: :dry_run) end},
      {"leaks(mode: :targeted)", fn -> Binscope.leaks!(mode: :targeted) end},
      {"leaks(mode: :full)", fn -> Binscope.leaks!(mode: :full) end}
    ]
  end

  @doc """
  Runs every operation at every population size. Returns `%{cells: [{count, comparison,
  idle_probe}], report: report}`; each result's `custom` holds `:processes_seen` (records
  returned by `processes()`, else the call's result count), `:probe_p50_us`, `:probe_p99_us`,
  `:probe_max_us` and `:probe_wakeups`.
  """
  @spec run(keyword()) :: map()
  def run(opts \\ []) do
    o = Keyword.merge(@defaults, opts)
    cells = for n <- o[:counts], do: cell(n, o)
    %{cells: cells, report: report(cells, o)}
  end

  defp cell(n, o) do
    pids = populate(n, o[:leak_every])

    try do
      idle = idle_probe(200)

      alts =
        for {name, op} <- ops() do
          {name,
           fn ->
             probe = start_probe()
             result = op.()
             lateness = stop_probe(probe)
             Bench.record(:processes_seen, length(result))
             record_probe(lateness)
           end}
        end

      cmp = Bench.compare!(alts, runs: o[:runs], warmup: o[:warmup], trace_gc: false)
      {n, cmp, idle}
    after
      Bench.kill_all(pids)
    end
  end

  defp record_probe([]), do: Bench.record(:probe_wakeups, 0)

  defp record_probe(lateness) do
    Bench.record(:probe_wakeups, length(lateness))
    Bench.record(:probe_p50_us, Bench.Stats.percentile(lateness, 50))
    Bench.record(:probe_p99_us, Bench.Stats.percentile(lateness, 99))
    Bench.record(:probe_max_us, Enum.max(lateness))
  end

  @doc false
  # Spawns `n` waiting processes (see the moduledoc); returns their pids once all are ready.
  def populate(n, leak_every) do
    me = self()

    pids =
      for i <- 1..n do
        spawn(fn ->
          own = :binary.copy(<<i::32>>, 32)

          if rem(i, leak_every) == 0 do
            # Reference 16 x 4 KiB binaries, then drop them without a collection.
            junk = for k <- 1..16, do: :binary.copy(<<k>>, 4096)
            _ = :erlang.phash2(junk)
          end

          send(me, :ready)

          receive do
            :stop -> byte_size(own)
          end
        end)
      end

    for _ <- 1..n, do: receive(do: (:ready -> :ok))
    pids
  end

  # A process sleeping 1 ms at a time and recording how late (µs) each wake-up came.
  defp start_probe do
    spawn(fn -> probe_loop([]) end)
  end

  defp probe_loop(acc) do
    t0 = System.monotonic_time(:microsecond)

    receive do
      {:stop, from} -> send(from, {:probe, self(), acc})
    after
      1 -> probe_loop([System.monotonic_time(:microsecond) - t0 - 1000 | acc])
    end
  end

  defp stop_probe(pid) do
    send(pid, {:stop, self()})

    receive do
      {:probe, ^pid, acc} -> Enum.map(acc, &max(&1, 0))
    end
  end

  defp idle_probe(ms) do
    p = start_probe()
    Process.sleep(ms)
    l = stop_probe(p)

    if l == [],
      do: %{p50: 0, p99: 0, max: 0},
      else: %{
        p50: Bench.Stats.percentile(l, 50),
        p99: Bench.Stats.percentile(l, 99),
        max: Enum.max(l)
      }
  end

  defp report(cells, o) do
    rows =
      for {n, cmp, idle} <- cells, r <- cmp.results do
        c = r.custom
        per_proc = r.time_ns.median / n

        [
          n,
          r.name,
          Report.duration(r.time_ns.median),
          Report.duration(r.time_ns.max),
          Report.duration(per_proc),
          fmt_us(c[:probe_p50_us]),
          fmt_us(c[:probe_p99_us]),
          fmt_us(c[:probe_max_us]),
          "#{idle.p99} / #{idle.max}"
        ]
      end

    bars =
      for {n, cmp, _} <- cells, r <- cmp.results do
        {"#{div(n, 1000)}k #{r.name}", r.time_ns.median / n / 1000}
      end

    %{
      title: "Scan costs",
      intro:
        "Extra processes: #{Enum.join(o[:counts], " and ")}, each holding one 128-byte refc " <>
          "binary; every #{o[:leak_every]}th also holds 64 KiB of dropped, uncollected binaries. " <>
          "Median (and max) of #{o[:runs]} runs per operation, operations interleaved. Probe: a " <>
          "process sleeping 1 ms in a loop; its lateness is how long past its timer it ran.",
      tables: [
        %{
          title: "scan cost",
          headers: [
            "processes",
            "operation",
            "median/call",
            "max/call",
            "per process",
            "probe lateness p50 µs",
            "p99 µs",
            "max µs",
            "idle node p99 / max µs"
          ],
          rows: rows
        }
      ],
      chart: %{title: "Scan cost per process", y_label: "µs per process", bars: bars}
    }
  end

  defp fmt_us(nil), do: "-"
  defp fmt_us(%{median: m}), do: round(m)
end
