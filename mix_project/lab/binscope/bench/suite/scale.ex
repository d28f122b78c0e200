defmodule Binscope.Bench.Suite.Scale do
  @moduledoc """
  The scale suite (`make bench-scale`): Binscope's scans on a node of `small` (default 50k) and
  `large` (default 1M) extra processes, each beside its anchor, interleaved, ratios from one run.
  The anchor is recon's algorithm (`Binscope.Bench.ReconAnchor`).

  Population: `n` idle processes, each holding one unique 100-byte refc binary and waiting in a
  receive, plus `leakers` processes; before every measured run (of either side) each leaker
  `i` (1-based) references `leak_bins + i` fresh binaries of `bin_size` bytes and drops them
  without a collection: garbage only a GC frees, `(leak_bins + i) * bin_size` bytes exactly.

  Rows (each a ratio of medians, Binscope over its anchor, both measured in the same rounds,
  the side that starts a round alternating; `small_rounds` rounds at `small`, `rounds` at
  `large`):

    * `leaks()` (targeted) against `bin_leak(10)`, at `small` and `large`: plus how many of the
      leakers each found (Binscope: by bytes, every leaker's `reclaimed_bytes` equal to what it
      planted; recon: among its top 10 by references freed);
    * `leaks(mode: :full)` against `bin_leak(10)` at `large`, with each side's peak memory;
    * `processes(detail: :basic)` against `proc_count(:memory, 10)` at `large`, with the
      result's size and the peak memory per process;
    * `snapshot(detail: :basic)` (USS and PSS of every process, from the same two items)
      against a plain `process_info(pid, [:binary, :memory])` sweep at `small`;
    * the floor at each size: one `process_info(pid, [:binary])` per process, per process.

  Every run is made in a fresh process (the scanner, which returns a summary, never the records)
  while `:erlang.system_monitor/2` watches `long_schedule` (1 ms) and `long_gc` (`long_gc_ms`);
  each row reports the worst of each seen on the scan's side (the scanner, Binscope's own
  scanner process, collector workers, GC helpers). A last table (the scheduler proof) runs each
  of Binscope's scans at `large` once more beside a control process spinning plain Erlang code,
  which never holds a scheduler by itself: its reports measure what the OS takes away on a
  loaded machine, the yardstick for the scan's.
  Peak memory: `:erlang.memory(:total)` plus the NIF's jemalloc `allocated`, sampled every 2 ms
  during the run, above their values before it. Each row also carries the load average.
  """

  alias Binscope.Bench
  alias Binscope.Bench.{ReconAnchor, Report}

  @defaults [
    small: 50_000,
    large: 1_000_000,
    leakers: 10,
    leak_bins: 8,
    bin_size: 65_536,
    rounds: 3,
    # A run at `small` takes 0.1-0.3 s, and one pair of runs tells little: single snapshot/sweep
    # pairs at 50k read 1.03-1.56x in one VM, medians of 16 pairs 1.19-1.26x in six VMs.
    small_rounds: 11,
    long_gc_ms: 10,
    only: nil
  ]

  # The rows `only:` picks from: a pair (and the scheduler proof of the same scan), or a proof
  # alone (`:dry_run`, `:top`). The floor runs at every size that has a row.
  @rows [:targeted, :snapshot, :full, :basic, :dry_run, :top]

  @doc "The row names `only:` takes."
  @spec rows() :: [atom()]
  def rows, do: @rows

  @doc """
  Options for a run of a few seconds that checks the code paths, not the speed. Leakers drop
  MiB-sized binaries there, so garbage that other tests' processes hold (the smoke test runs in
  the whole suite) cannot outrank them.
  """
  @spec smoke_opts() :: keyword()
  def smoke_opts,
    do: [small: 1_500, large: 3_000, rounds: 1, small_rounds: 1, leakers: 10, leak_bins: 2, bin_size: 1_048_576]

  @doc """
  Runs every row, or with `only: [row]` (see `rows/0`) those rows only: a size none of them
  uses is not populated. Returns `%{rows: [row], report: report}`; a row is a map with `:name`, `:n`,
  `:ours`, `:anchor` (names), `:ours_ns`, `:anchor_ns` (each run's time), `:ratio`, `:found`,
  `:anchor_found`, `:ours_peak`, `:anchor_peak` (bytes), `:result_bytes_per_process`,
  `:long_schedule_ms` and `:long_gc_ms` (the worst the scanner saw), `:long_schedule_at` (where
  that worst one was scheduled in and out, `nil` without one), `:load`.
  """
  @spec run(keyword()) :: %{rows: [map()], report: map()}
  def run(opts \\ []) do
    o = Keyword.merge(@defaults, opts)

    case (o[:only] || []) -- @rows do
      [] -> :ok
      bad -> raise ArgumentError, "only: unknown rows #{inspect(bad)}, expected some of #{inspect(@rows)}"
    end

    small = if any?(o, [:targeted, :snapshot]), do: with_population(o[:small], o, &small_rows(&1, &2, o)), else: []
    large = if any?(o, [:targeted, :full, :basic, :dry_run, :top]), do: with_population(o[:large], o, &large_rows(&1, &2, o)), else: []
    rows = small ++ large
    %{rows: rows, report: report(rows, o)}
  end

  defp any?(o, rows), do: o[:only] == nil or Enum.any?(rows, &(&1 in o[:only]))

  # Each `{row, fun}` whose row `only:` picks, run in this order.
  defp pick(specs, o), do: for({row, fun} <- specs, any?(o, [row]), do: fun.())

  defp small_rows(n, leakers, o) do
    o = Keyword.put(o, :rounds, o[:small_rounds])

    [floor_row(n)] ++
      pick(
        [
          targeted: fn -> targeted_row(n, leakers, o) end,
          snapshot: fn ->
            pair(
              "snapshot() with USS/PSS",
              n,
              {"snapshot(detail: :basic)", fn -> snapshot_summary() end},
              {"process_info(pid, [:binary, :memory]) sweep", fn -> sweep_summary() end},
              [],
              o
            )
          end
        ],
        o
      )
  end

  defp targeted_row(n, leakers, o) do
    pair(
      "leaks() targeted",
      n,
      {"leaks()", fn -> leaks_summary(Binscope.leaks!(), leakers) end},
      {"bin_leak(10)", fn -> recon_summary(ReconAnchor.bin_leak(10), leakers) end},
      leakers,
      o
    )
  end

  defp large_rows(n, leakers, o) do
    [floor_row(n)] ++
      pick(
        [
          targeted: fn -> targeted_row(n, leakers, o) end,
          full: fn ->
            pair(
              "leaks(mode: :full)",
              n,
              {"leaks(mode: :full)", fn -> leaks_summary(Binscope.leaks!(mode: :full), leakers) end},
              {"bin_leak(10)", fn -> recon_summary(ReconAnchor.bin_leak(10), leakers) end},
              leakers,
              o
            )
          end,
          basic: fn ->
            pair(
              "processes(detail: :basic)",
              n,
              {"processes(detail: :basic)", fn -> processes_summary() end},
              {"proc_count(:memory, 10)", fn -> length(ReconAnchor.proc_count(:memory, 10)) end},
              [],
              o
            )
          end
        ],
        o
      ) ++ proof_rows(n, leakers, o)
  end

  # Each of Binscope's scans once more, beside a control process spinning plain Erlang code:
  # the scan's worst long_schedule against the control's (the OS's share on a loaded machine).
  defp proof_rows(n, leakers, o) do
    ops = [
      {:targeted, "leaks()", fn -> length(Binscope.leaks!()) end},
      {:dry_run, "leaks(mode: :dry_run)", fn -> length(Binscope.leaks!(mode: :dry_run)) end},
      {:full, "leaks(mode: :full)", fn -> length(Binscope.leaks!(mode: :full)) end},
      {:top, "top(10, by: :binary_pss)", fn -> length(Binscope.top!(10, by: :binary_pss)) end},
      {:basic, "processes(detail: :basic)", fn -> length(Binscope.processes!(detail: :basic)) end},
      {:snapshot, "snapshot(detail: :basic)", fn -> snapshot_summary().results end}
    ]

    for {row, name, fun} <- ops, any?(o, [row]) do
      plant(leakers)
      r = run_one(fun, o, true)

      %{
        proof: name,
        n: n,
        long_schedule_ms: r.long_schedule,
        long_schedule_at: r.long_schedule_at,
        reports: r.scan_reports,
        control_long_schedule_ms: r.control_long_schedule,
        long_gc_ms: r.long_gc,
        load: load()
      }
    end
  end

  # --- population --------------------------------------------------------------------------

  defp with_population(n, o, fun) do
    me = self()
    idle = for i <- 1..n, do: spawn(fn -> idle(me, i) end)
    for _ <- idle, do: receive(do: (:ready -> :ok))
    leakers = for i <- 1..o[:leakers], do: spawn(fn -> leaker(i, o[:leak_bins], o[:bin_size]) end)

    try do
      fun.(n, leakers)
    after
      Bench.kill_all(idle ++ leakers)
    end
  end

  defp idle(parent, i) do
    own = :binary.copy(<<i::32>>, 25)
    send(parent, :ready)

    receive do
      :stop -> byte_size(own)
    end
  end

  defp leaker(i, bins, size) do
    receive do
      {:plant, from} ->
        # Referenced, then dropped without a collection: garbage only a GC frees.
        junk = for k <- 1..(bins + i), do: :binary.copy(<<k, i>>, div(size, 2))
        send(from, {:planted, self(), :erlang.phash2(junk)})
        leaker(i, bins, size)
    end
  end

  @doc false
  # The bytes leaker `i` plants before every run.
  def planted(i, o), do: (o[:leak_bins] + i) * o[:bin_size]

  # Every leaker has planted and is back in its receive, idle: a run starts from idle leakers
  # (one still on its way to the receive runs a few reductions within a scan's activity window
  # and counts as running).
  defp plant(leakers) do
    for p <- leakers, do: send(p, {:plant, self()})
    for p <- leakers, do: receive(do: ({:planted, ^p, _} -> :ok))
    Enum.each(leakers, &waiting/1)
  end

  defp waiting(pid) do
    case Process.info(pid, :status) do
      # Waiting, or gone (the run then finds it missing).
      s when s in [{:status, :waiting}, nil] ->
        :ok

      _ ->
        :erlang.yield()
        waiting(pid)
    end
  end

  # --- what each side returns (computed in the scanner: never the records themselves) ------

  defp leaks_summary(results, leakers) do
    by_pid = Map.new(results, &{&1.pid, &1.reclaimed_bytes})
    %{results: length(results), reclaimed: Enum.map(leakers, &Map.get(by_pid, &1))}
  end

  defp recon_summary(top, leakers) do
    found = for {pid, _, _} <- top, pid in leakers, do: pid
    %{results: length(top), found: length(found)}
  end

  # The call alone is timed (its own `:ns`); then the result's size: what 1,000 of its records
  # take on the heap, shared parts counted once (`:erts_debug.size/1`), per record, plus the
  # list cell each.
  defp processes_summary do
    {ns, records} = timed(fn -> Binscope.processes!(detail: :basic) end)
    w = :erlang.system_info(:wordsize)
    sample = Enum.take(records, 1000)
    per = :erts_debug.size(sample) / length(sample)
    %{ns: ns, results: length(records), bytes: per * w * length(records)}
  end

  defp snapshot_summary do
    {:ok, s} = Binscope.snapshot(detail: :basic)
    %{results: length(s.processes), pss: s.summary.unique_bytes}
  end

  # The comprehension's value is unused, so Elixir compiles it to a reduce that keeps nothing:
  # every reply is garbage as soon as it arrives (the sweep's heap stays small). The snapshot
  # keeps every list until attribution, as it must.
  defp sweep_summary do
    for p <- :erlang.processes(), do: :erlang.process_info(p, [:binary, :memory])
    :ok
  end

  # --- measurement -------------------------------------------------------------------------

  # In a fresh process, replies dropped: the cost of the calls alone.
  defp floor_row(n) do
    count = :erlang.system_info(:process_count)
    me = self()

    spawn(fn ->
      {ns, _} =
        timed(fn -> Enum.each(:erlang.processes(), &:erlang.process_info(&1, [:binary])) end)

      send(me, {:floor, ns})
    end)

    ns = receive do: ({:floor, ns} -> ns)

    %{
      name: "floor: process_info(pid, [:binary]) per process",
      n: n,
      floor_ns: ns / count,
      load: load()
    }
  end

  defp pair(name, n, {ours, our_fun}, {anchor, anchor_fun}, leakers, o) do
    runs =
      for round <- 1..o[:rounds],
          side <- if(rem(round, 2) == 1, do: [:ours, :anchor], else: [:anchor, :ours]) do
        plant(leakers)
        fun = if side == :ours, do: our_fun, else: anchor_fun
        {side, run_one(fun, o)}
      end

    mine = for {:ours, r} <- runs, do: r
    theirs = for {:anchor, r} <- runs, do: r
    med = fn rs -> rs |> Enum.map(& &1.ns) |> median() end
    last = List.last(mine).result

    %{
      name: name,
      n: n,
      ours: ours,
      anchor: anchor,
      ours_ns: Enum.map(mine, & &1.ns),
      anchor_ns: Enum.map(theirs, & &1.ns),
      ratio: med.(mine) / med.(theirs),
      found: found(mine, leakers, o),
      anchor_found: anchor_found(theirs),
      ours_peak: mine |> Enum.map(& &1.peak) |> Enum.max(),
      anchor_peak: theirs |> Enum.map(& &1.peak) |> Enum.max(),
      result_bytes_per_process: if(is_map(last) and last[:bytes], do: last.bytes / n),
      results: if(is_map(last), do: last[:results]),
      long_schedule_ms: mine |> Enum.map(& &1.long_schedule) |> Enum.max(),
      long_schedule_at: mine |> Enum.max_by(& &1.long_schedule) |> Map.fetch!(:long_schedule_at),
      long_gc_ms: mine |> Enum.map(& &1.long_gc) |> Enum.max(),
      anchor_long_schedule_ms: theirs |> Enum.map(& &1.long_schedule) |> Enum.max(),
      load: load()
    }
  end

  # Leakers found by bytes in every run: each one's reclaimed_bytes exactly what it planted.
  defp found(_runs, [], _o), do: nil

  defp found(runs, leakers, o) do
    want = for i <- 1..length(leakers), do: planted(i, o)

    runs
    |> Enum.map(fn %{result: %{reclaimed: got}} ->
      Enum.zip(got, want) |> Enum.count(fn {g, w} -> g == w end)
    end)
    |> Enum.min()
  end

  defp anchor_found(runs) do
    case runs do
      [%{result: %{found: _}} | _] -> runs |> Enum.map(& &1.result.found) |> Enum.min()
      _ -> nil
    end
  end

  # One run in a fresh scanner process, watched by the system monitor and a memory sampler.
  # With `control: true` a control process spins plain Erlang code meanwhile: it never holds
  # its scheduler for 1 ms by itself, so its own long_schedule reports are the OS taking a core
  # away (a loaded machine), the yardstick for the scanner's.
  defp run_one(fun, o, control? \\ false) do
    me = self()
    base = memory_now()
    sampler = spawn(fn -> sample(base, base) end)
    control = if control?, do: spawn(fn -> spin(0) end)
    ignore = [me, sampler]

    watcher =
      spawn(fn ->
        watch(control, ignore, %{scan: 0, scan_at: nil, scan_gc: 0, control: 0, reports: 0})
      end)

    previous = :erlang.system_monitor(watcher, [{:long_schedule, 1}, {:long_gc, o[:long_gc_ms]}])

    {scanner, ref} =
      spawn_monitor(fn ->
        {ns, result} = timed(fun)
        # A summary that timed its call itself reports that time.
        ns = if is_map(result) and is_map_key(result, :ns), do: result.ns, else: ns
        send(me, {:scanned, self(), ns, result})
      end)

    {ns, result} =
      receive do
        {:scanned, ^scanner, ns, result} -> {ns, result}
        {:DOWN, ^ref, :process, ^scanner, reason} -> raise "scan failed: #{inspect(reason)}"
      end

    receive do: ({:DOWN, ^ref, :process, ^scanner, _} -> :ok)
    restore(previous)
    if control, do: Process.exit(control, :kill)
    send(sampler, {:stop, me})
    peak = receive do: ({:peak, ^sampler, p} -> p)
    send(watcher, {:stop, me})
    seen = receive do: ({:watched, ^watcher, seen} -> seen)

    %{
      ns: ns,
      result: result,
      peak: peak - base,
      long_schedule: seen.scan,
      long_schedule_at: seen.scan_at,
      long_gc: seen.scan_gc,
      control_long_schedule: seen.control,
      scan_reports: seen.reports
    }
  end

  defp restore(:undefined), do: :erlang.system_monitor(:undefined)
  defp restore({pid, opts}), do: :erlang.system_monitor(pid, opts)

  defp spin(n), do: spin(rem(n + 1, 1_000_000))

  # Classifies each report as it comes (the reported process may be gone later): the control;
  # the population (alive, waiting in this module's idle or leaker loop: recon's and the full
  # scan's forced collections run in them) and the bench's own processes, dropped; anything
  # else is the scan's side: the scanner, Binscope's scanner process, collector workers and
  # GC helpers.
  defp watch(control, ignore, seen) do
    receive do
      {:monitor, pid, kind, info} ->
        watch(control, ignore, classify(pid, kind, info, control, ignore, seen))

      {:stop, from} ->
        # Reports sent before the monitor was switched off are already queued.
        send(from, {:watched, self(), drain(control, ignore, seen)})
    end
  end

  defp drain(control, ignore, seen) do
    receive do
      {:monitor, pid, kind, info} ->
        drain(control, ignore, classify(pid, kind, info, control, ignore, seen))
    after
      0 -> seen
    end
  end

  defp classify(control, :long_schedule, info, control, _ignore, seen),
    do: %{seen | control: max(seen.control, info[:timeout] || 0)}

  defp classify(pid, kind, info, _control, ignore, seen) do
    t = info[:timeout] || 0

    cond do
      pid in ignore or not is_pid(pid) or population?(pid) -> seen
      kind == :long_schedule -> %{longest(seen, t, info) | reports: seen.reports + 1}
      kind == :long_gc -> %{seen | scan_gc: max(seen.scan_gc, t)}
      true -> seen
    end
  end

  # The scan's worst long_schedule so far, with where it was scheduled in and out.
  defp longest(seen, t, info) when t > seen.scan,
    do: %{seen | scan: t, scan_at: where(info[:in]) <> " -> " <> where(info[:out])}

  defp longest(seen, _t, _info), do: seen

  defp where({m, f, a}), do: Exception.format_mfa(m, f, a)
  defp where(other), do: inspect(other)

  defp population?(pid) do
    case Process.info(pid, :current_function) do
      {:current_function, {__MODULE__, f, _}} -> f in [:idle, :leaker]
      _ -> false
    end
  end

  defp sample(base, peak) do
    receive do
      {:stop, from} -> send(from, {:peak, self(), max(peak, memory_now())})
    after
      2 -> sample(base, max(peak, memory_now()))
    end
  end

  defp memory_now do
    native =
      case Binscope.Native.allocator_stats() do
        {:ok, %{allocated: a}} -> a
        _ -> 0
      end

    :erlang.memory(:total) + native
  end

  defp timed(fun) do
    t0 = System.monotonic_time(:nanosecond)
    r = fun.()
    {System.monotonic_time(:nanosecond) - t0, r}
  end

  defp median(l) do
    s = Enum.sort(l)
    n = length(s)

    if rem(n, 2) == 1,
      do: Enum.at(s, div(n, 2)),
      else: (Enum.at(s, div(n, 2) - 1) + Enum.at(s, div(n, 2))) / 2
  end

  defp load do
    case File.read("/proc/loadavg") do
      {:ok, s} -> s |> String.split() |> Enum.take(3) |> Enum.join(" ")
      _ -> "unknown"
    end
  end

  # --- report ------------------------------------------------------------------------------

  defp report(rows, o) do
    floors = for %{floor_ns: f, n: n} <- rows, into: %{}, do: {n, f}

    table =
      for %{ratio: _} = r <- rows do
        floor = floors[r.n]
        med = median(r.ours_ns)

        [
          r.n,
          r.name,
          r.anchor,
          Report.duration(med),
          Report.duration(median(r.anchor_ns)),
          Report.ratio(r.ratio),
          floor_multiple(med, floor, r.n),
          found_cell(r),
          mib(r.ours_peak) <> " / " <> mib(r.anchor_peak),
          per_process(r),
          "#{r.long_schedule_ms} / #{r.long_gc_ms}",
          r.load
        ]
      end

    floor_rows = for %{floor_ns: f, n: n, load: l} <- rows, do: [n, Report.duration(f), l]

    proof_rows =
      for %{proof: name} = r <- rows do
        [
          r.n,
          name,
          r.long_schedule_ms,
          r.reports,
          r.control_long_schedule_ms,
          r.long_gc_ms,
          r.load
        ]
      end

    where_rows =
      for %{long_schedule_at: at} = r <- rows, at != nil do
        [r.n, r[:proof] || r.name, r.long_schedule_ms, at]
      end

    %{
      title: "Scans at scale",
      intro:
        "Extra processes: #{o[:small]} and #{o[:large]} idle ones (one 100-byte refc binary each) " <>
          "plus #{o[:leakers]} leakers (leaker i drops #{o[:leak_bins]} + i binaries of " <>
          "#{o[:bin_size]} bytes before every run). Median of #{o[:small_rounds]} runs per side " <>
          "at #{o[:small]}, #{o[:rounds]} at #{o[:large]}, " <>
          "sides interleaved; ratio = Binscope / anchor (lower is faster). Anchor: recon's " <>
          "algorithm (Binscope.Bench.ReconAnchor). Floor: one process_info(pid, [:binary]) " <>
          "per process. Peak: node memory (VM total + NIF allocated) above its value before " <>
          "the run. long_schedule / long_gc: the worst the scanner process saw (ms).",
      tables: [
        %{
          title: "scans beside their anchors",
          headers: [
            "processes",
            "operation",
            "anchor",
            "median",
            "anchor median",
            "ratio",
            "x floor",
            "leakers found (ours / anchor)",
            "peak MiB (ours / anchor)",
            "result B / process",
            "worst long_schedule / long_gc ms",
            "load"
          ],
          rows: table
        },
        %{
          title: "the floor: one process_info/2 call per process",
          headers: ["processes", "per process", "load"],
          rows: floor_rows
        },
        %{
          title: "scheduler proof: long_schedule (1 ms monitor) beside a control process",
          headers: [
            "processes",
            "operation",
            "scan's worst long_schedule ms",
            "scan's reports",
            "control's worst long_schedule ms",
            "scan's worst long_gc ms",
            "load"
          ],
          rows: proof_rows
        },
        %{
          title: "where the scan's worst long_schedule of each row was (scheduled in -> out)",
          headers: ["processes", "operation", "ms", "in -> out"],
          rows: where_rows
        }
      ]
    }
  end

  defp floor_multiple(_med, nil, _n), do: "-"
  defp floor_multiple(med, floor, n), do: Report.ratio(med / (floor * n))

  defp found_cell(%{found: nil}), do: "-"
  defp found_cell(r), do: "#{r.found} / #{r.anchor_found}"

  defp per_process(%{result_bytes_per_process: nil}), do: "-"
  defp per_process(r), do: "#{round(r.result_bytes_per_process)}"

  defp mib(b), do: :erlang.float_to_binary(b / 1_048_576, decimals: 1)
end
