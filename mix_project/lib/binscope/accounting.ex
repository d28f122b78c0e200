defmodule Binscope.Accounting do
  @moduledoc """
  Process memory accounting: one record per process, with shared binaries attributed fairly.

  `snapshot/1` runs the collector on the target node (one `process_info/2` call per process),
  then attributes every binary reference in Rust (`binscope_core::accounting`): each binary counts
  once however many processes hold it, and store binaries count at their real size instead of the
  72 bytes the VM lists for them.

  Cost: proportional to the number of processes and binary references; measured in the README
  (Performance). Read-only: it forces no GC and changes nothing on the target node. Safe on a
  busy production node, though a node with hundreds of thousands of processes takes a fraction
  of a second of one scheduler for the scan (the scan itself yields like any Erlang code;
  attribution runs on a dirty scheduler; `workers:` splits the scan, see `Binscope.processes/1`).

  Memory: the records are built on the calling process's heap, and the room for them is reserved
  (its `min_heap_size` and `min_bin_vheap_size` raised for the call, at most 512 MiB each, and
  put back after) instead of growing the heap through a string of collections. A basic snapshot
  of this node keeps no `process_info/2` reply: the collector hands their figures to the NIF in
  batches as they arrive and keeps only the pids, so the scan runs in a small heap, as a plain
  sweep does, and the room is reserved after it, for the records alone. A full snapshot, or one
  of another node, keeps the replies: its room is reserved up front, for the scan and the records.
  """

  alias Binscope.Accounting.Heap
  alias Binscope.{Collector, Remote}

  require Collector

  # Words a snapshot allocates on the caller's heap per process (see Heap): the scan at basic or
  # full detail plus the records, or the records alone for a remote scan. The process_info
  # replies count too: they arrive in heap fragments, which count towards the next collection.
  # Measured at the end of a snapshot of 30k processes holding one binary each (heap words in
  # use plus fragments): basic 56 + 22 on OTP 25, 97 + 27 on OTP 29; full 91 + 155 on OTP 25,
  # 143 + 162 on OTP 29. Each further binary a process lists adds 6 words of reply.
  @basic_words 136
  @full_words 320
  @record_words 40
  # Virtual binary heap words per process: the NIF's packed figures (8 words each), and for a
  # compact scan its memory, listed bytes and reductions (3 more).
  @share_words 8
  @extra_words 3

  # Every field of a process record, none collected.
  @uncollected Map.new(
                 ~w(pid node registered_name label initial_call current_function memory heap_size
                    total_heap_size stack_size old_heap_size message_queue_len reductions
                    binary_refs binary_bytes binary_distinct binary_uss binary_pss binary_shared
                    native_bytes native_store_bytes native_estimated_bytes
                    unresolved_store_binaries minor_gcs
                    fullsweep_after bin_vheap_size bin_old_vheap_size)a,
                 &{&1, nil}
               )

  # The fields of a `detail: :basic` record (what basic detail collects, and nothing else).
  @basic_fields ~w(pid node registered_name label memory binary_refs binary_bytes binary_distinct
                   binary_uss binary_pss binary_shared native_store_bytes
                   unresolved_store_binaries)a

  @typedoc "One process's record (sizes in bytes). See `Binscope.processes/1`."
  @type process_record :: %{atom() => term()}

  @typedoc "A snapshot of one node."
  @type snapshot :: %{
          node: node(),
          time_ms: integer(),
          workers: pos_integer(),
          store_resolution: :ok | :not_loaded | {:error, term()},
          processes: [process_record()],
          summary: map(),
          top_shared: [map()]
        }

  @doc """
  The fields of a `detail: :basic` record, in no particular order: what basic detail collects.
  A full-detail record has these and every other field of `Binscope.processes/1`. A basic record
  of a leak scan's sweep (`reductions: true`, see `snapshot/2`) also has `reductions`.
  """
  @spec basic_fields() :: [atom()]
  def basic_fields, do: @basic_fields

  @doc """
  Snapshots `node`'s processes and attributes their binaries. `opts`: `:pids` (only these),
  `:deadline` (see `Binscope.Remote`; or `:timeout` in ms from now), `:top_shared` (how many of
  the most shared binaries to list, default 10). `{:error, :timeout}` once the deadline passes.

  Three options serve whole-node leak scans: `:reductions` (with `detail: :basic`, each record
  also carries the process's reductions), `:window_ms` (with `:reductions`: the caller samples
  activity again that long after each record's reductions were read; the collector then reads
  the reductions of the pids it sweeps last before its sweep, and the snapshot carries
  `:sampled_at`, the monotonic time in microseconds by which every record's reductions were read,
  on this node's clock: a remote node's reply time less the age it reports) and `:select`, a
  function that returns the indexes (in scan order) of the processes to make records for, in the
  order wanted: every binary is still attributed over the whole node, but `processes` then
  holds those records only (a scan of a million processes builds a few maps, not a million).
  It is given `%{shares: packed}` (the attribution's packed figures, one row of 8 native-endian
  u64s a process: refs, distinct, uss, pss, shared, store bytes, unresolved, bytes), `pids:`
  (the scan's pids in order, as a list of lists of pids or records) and either `extra:` (a
  compact scan's: memory, listed bytes, reductions) or `procs:` (the collector's records).
  `top_select/2` makes one.
  """
  @spec snapshot(node(), map()) :: {:ok, snapshot()} | {:error, term()}
  def snapshot(node, opts) do
    args = [Map.take(opts, [:pids, :detail, :workers, :reductions, :window_ms])]
    top = Map.get(opts, :top_shared, 10)
    deadline = deadline(opts)
    Remote.bounded(fn -> snapshot(node, opts, args, top, deadline) end)
  end

  defp snapshot(node, opts, args, top, deadline) do
    cond do
      # The collector uses the NIF only where it is loaded (code loads lazily in interactive mode).
      node == node() and Map.get(opts, :detail, :full) == :basic and
          Code.ensure_loaded?(Binscope.Native) ->
        compact_snapshot(node, opts, args, top, deadline)

      node == node() ->
        local_snapshot(node, opts, args, top, deadline)

      true ->
        remote_snapshot(node, opts, args, top, deadline)
    end
  end

  # A basic scan here keeps no reply (the collector hands the replies' figures to the NIF in
  # batches as they arrive, `:binscope_collector_compact`): the scan needs no room of its own,
  # its collections copy little more than the pids and free the replies' heap fragments as they
  # go. The room is reserved afterwards, for the records alone.
  defp compact_snapshot(node, opts, [args], top, deadline) do
    with {:ok, raw} <- Remote.call(node, :snapshot, [Map.put(args, :compact, true)], deadline) do
      n = processes(opts)
      words = n * record_words(opts)

      result =
        Heap.reserve(words, n * (@share_words + @extra_words), fn ->
          {:ok, attribute(sampled_at(raw), top, deadline, opts[:select])}
        end)

      Heap.release_fragments()
      result
    end
  end

  # A scan that selects (a leak scan, top/2) builds the records of its few picks only.
  defp record_words(%{select: select}) when select != nil, do: 0
  defp record_words(_opts), do: @record_words

  defp processes(%{pids: pids}), do: length(pids)
  defp processes(_opts), do: :erlang.system_info(:process_count)

  defp local_snapshot(node, opts, args, top, deadline) do
    # The scan runs here too: room for it and for the records.
    n = processes(opts)
    per = if Map.get(opts, :detail, :full) == :basic, do: @basic_words, else: @full_words

    result =
      Heap.reserve(n * (per - record_words(opts)), n * @share_words, fn ->
        with {:ok, raw} <- Remote.call(node, :snapshot, args, deadline),
             do: {:ok, attribute(sampled_at(raw), top, deadline, opts[:select])}
      end)

    Heap.release_fragments()
    result
  end

  defp remote_snapshot(node, opts, args, top, deadline) do
    with {:ok, raw} <- Remote.call(node, :snapshot, args, deadline) do
      raw = sampled_at(raw)
      n = length(raw.procs)

      Heap.reserve(n * record_words(opts), n * @share_words, fn ->
        {:ok, attribute(raw, top, deadline, opts[:select])}
      end)
    end
  end

  # When the records' reductions were read, on this node's clock: the collector reports how long
  # before its reply (the reply's way here only makes the estimate later, never earlier).
  defp sampled_at(%{sampled_age_us: age} = raw),
    do: Map.put(raw, :sampled_at, System.monotonic_time(:microsecond) - age)

  defp sampled_at(raw), do: raw

  defp deadline(%{deadline: d}), do: d
  defp deadline(%{timeout: t}), do: Remote.deadline(t)

  # Records are built this many at a time between looks at the clock.
  @check_every 4096

  # Bytes per process of the packed figures, and of a compact scan's memory, listed bytes and
  # reductions.
  @width 64
  @extra_width 24

  @doc """
  Turns a collector snapshot (from any node) into records, attributing binaries in Rust. With a
  `deadline`, throws the collector's timeout (see `Binscope.Remote.check!/1`) once it passes.
  A compact snapshot (the collector's `compact => true`, whose figures the scan left with this
  node's NIF) is attributed on the node that took it.
  """
  @spec attribute(
          map(),
          non_neg_integer(),
          Remote.deadline() | :infinity,
          nil | (binary() -> [non_neg_integer()])
        ) :: snapshot()
  def attribute(raw, top_shared, deadline \\ :infinity, select \\ nil)

  def attribute(%{procs: [Collector.scan() | _] = scans} = raw, top_shared, deadline, select) do
    in_time!(deadline)

    {shares, extra, summary, top} =
      Binscope.Native.accounting_attribute_scans(
        for(Collector.scan(acc: acc, pending: pending) <- scans, do: {acc, pending}),
        top_shared
      )

    in_time!(deadline)
    node = raw.node
    names = raw.names

    records =
      case select do
        nil ->
          scan_records(scans, shares, extra, names, node, deadline, @check_every)

        fun ->
          pids = for Collector.scan(pids: pids) <- scans, do: pids
          figures = %{shares: shares, extra: extra, pids: pids}
          scan_selected(scans, shares, extra, fun.(figures), names, node)
      end

    %{head(raw, summary, top) | processes: records}
  end

  def attribute(%{procs: procs, word_size: w} = raw, top_shared, deadline, select) do
    # The NIF reads each record's binary list in place (its index is given) and packs the
    # figures of every process into one binary (read in step with the records, `records/7`).
    in_time!(deadline)

    {shares, summary, top} =
      Binscope.Native.accounting_attribute(procs, Collector.binaries_index(), top_shared)

    # OTP 27+ charges a NIF resource binary only its magic binary's size (OTP issue 11611), so
    # the virtual binary heap no longer reveals other NIFs' native bytes: no estimate there.
    estimable = Map.get(raw, :resource_vheap, true)
    in_time!(deadline)

    # Everything but the records first: `raw` is not used after, so the collector's records are
    # garbage as the walk consumes them (a collection meanwhile copies only what is left of
    # them, not all of them beside the new records: at a million processes, hundreds of MiB).
    snapshot = head(raw, summary, top)
    node = raw.node

    records =
      case select do
        nil ->
          records(procs, shares, {w, estimable}, node, [], deadline, @check_every)

        fun ->
          figures = %{shares: shares, procs: procs, pids: [procs]}
          selected(procs, shares, fun.(figures), {w, estimable}, node)
      end

    %{snapshot | processes: records}
  end

  # The snapshot without its records.
  defp head(raw, summary, top) do
    snapshot = %{
      node: raw.node,
      time_ms: raw.time_ms,
      store_loaded: raw.store,
      # Whether store binaries were resolved to their entries: `{:error, reason}` when the
      # node's address calibration failed its self-check (they then count as VM binaries).
      store_resolution: Map.get(raw, :store_resolution, :ok),
      word_size: raw.word_size,
      workers: raw.workers,
      processes: [],
      summary: summary,
      top_shared: Enum.map(top, &shared/1)
    }

    Map.merge(snapshot, Map.take(raw, [:sampled_at]))
  end

  # The records of a compact scan's shares (`Collector.scan`, in order) and the packed figures,
  # walked in step: each share's pids and labels (sparse, by index in the share), the NIF's
  # figures (`shares`) and each process's memory, listed bytes and reductions (`extra`).
  # Body-recursive, so the records come out in order: an accumulator had to be reversed after,
  # one more list as long as the node's processes (perf at 50k: a quarter of this walk).
  defp scan_records([], <<>>, <<>>, _names, _node, _deadline, _k), do: []

  defp scan_records([scan | scans], shares, extra, names, node, deadline, k) do
    Collector.scan(pids: pids, labels: labels, reductions: reds?) = scan
    share_records(pids, 0, labels, reds?, shares, extra, names, node, deadline, k, scans)
  end

  defp share_records(
         [pid | pids],
         i,
         labels,
         reds?,
         <<refs::64-native, distinct::64-native, uss::64-native, pss::64-native,
           shared::64-native, store::64-native, unresolved::64-native, _resolved::64-native,
           rest::binary>>,
         <<mem::64-native, listed::64-native, reds::64-native, more::binary>>,
         names,
         node,
         deadline,
         k,
         scans
       ) do
    {label, labels} =
      case labels do
        [{^i, label} | labels] -> {label, labels}
        _ -> {nil, labels}
      end

    reds = if reds?, do: reds, else: :undefined

    name =
      case names do
        %{^pid => name} -> name
        %{} -> nil
      end

    r =
      basic_map(
        pid,
        node,
        name,
        label,
        mem,
        reds,
        refs,
        listed,
        distinct,
        uss,
        pss,
        shared,
        store,
        unresolved
      )

    k = if k == 0, do: checked(deadline), else: k - 1
    [r | share_records(pids, i + 1, labels, reds?, rest, more, names, node, deadline, k, scans)]
  end

  # The share's last pid: the next share's records follow.
  defp share_records([], _i, [], _reds?, shares, extra, names, node, deadline, k, scans),
    do: scan_records(scans, shares, extra, names, node, deadline, k)

  # The records at `indexes` only, in that order (see `selected/5`).
  defp scan_selected(scans, shares, extra, indexes, names, node) do
    picked = pick_scans(scans, 0, :lists.usort(indexes), %{})

    for i <- indexes do
      {pid, label, reds?} = Map.fetch!(picked, i)

      <<r::64-native, d::64-native, u::64-native, p::64-native, s::64-native, st::64-native,
        un::64-native, _::64-native>> = binary_part(shares, i * @width, @width)

      <<mem::64-native, listed::64-native, reds::64-native>> =
        binary_part(extra, i * @extra_width, @extra_width)

      reds = if reds?, do: reds, else: :undefined

      basic_map(
        pid,
        node,
        Map.get(names, pid),
        label,
        mem,
        reds,
        r,
        listed,
        d,
        u,
        p,
        s,
        st,
        un
      )
    end
  end

  defp pick_scans(_scans, _i, [], acc), do: acc
  defp pick_scans([], _i, _want, acc), do: acc

  defp pick_scans([scan | scans], i, want, acc) do
    Collector.scan(pids: pids, labels: labels, reductions: reds?) = scan
    {i, want, acc} = pick_pids(pids, i, i, labels, reds?, want, acc)
    pick_scans(scans, i, want, acc)
  end

  # `base`: the index of the share's first pid (labels are indexed within the share).
  defp pick_pids([], i, _base, _labels, _reds?, want, acc), do: {i, want, acc}
  defp pick_pids(_pids, i, _base, _labels, _reds?, [], acc), do: {i, [], acc}

  defp pick_pids([pid | pids], i, base, labels, reds?, [i | more], acc) do
    label =
      case List.keyfind(labels, i - base, 0) do
        {_, label} -> label
        nil -> nil
      end

    acc = Map.put(acc, i, {pid, label, reds?})
    pick_pids(pids, i + 1, base, labels, reds?, more, acc)
  end

  defp pick_pids([_ | pids], i, base, labels, reds?, want, acc),
    do: pick_pids(pids, i + 1, base, labels, reds?, want, acc)

  # Attribution figures of a record that was not attributed: unknown.
  @unattributed {nil, nil, nil, nil, nil, nil, nil, nil}

  @doc """
  The records of a collector snapshot (from any node) without binary attribution: every figure
  the collector gathered, and `nil` (unknown) for every figure attribution would give
  (`binary_uss`, `native_bytes`, ...). For a few processes whose binaries were attributed among
  a whole node's already (the leak finder's shortlist).
  """
  @spec unattributed(map()) :: [process_record()]
  def unattributed(%{procs: procs, word_size: w, node: node}) do
    Enum.map(procs, &record(&1, @unattributed, {w, false}, node))
  end

  defp in_time!(:infinity), do: :ok
  defp in_time!(deadline), do: Remote.check!(deadline)

  # Walks the records and the packed figures in step; the clock is read every @check_every
  # records. Every clause matches the packed figures first, so one match context walks the
  # binary (no sub-binary per record), and a basic record is built straight from the figures
  # (no tuple of them per record): at a million processes, words a record less to allocate
  # between collections.
  defp records(
         [Collector.basic() = proc | procs],
         <<refs::64-native, distinct::64-native, uss::64-native, pss::64-native,
           shared::64-native, store::64-native, unresolved::64-native, _resolved::64-native,
           rest::binary>>,
         w,
         node,
         acc,
         deadline,
         k
       ) do
    r = basic(proc, refs, distinct, uss, pss, shared, store, unresolved, node)
    k = if k == 0, do: checked(deadline), else: k - 1
    records(procs, rest, w, node, [r | acc], deadline, k)
  end

  defp records(
         [proc | procs],
         <<refs::64-native, distinct::64-native, uss::64-native, pss::64-native,
           shared::64-native, store::64-native, unresolved::64-native, resolved::64-native,
           rest::binary>>,
         w,
         node,
         acc,
         deadline,
         k
       ) do
    r = record(proc, {refs, distinct, uss, pss, shared, store, unresolved, resolved}, w, node)
    k = if k == 0, do: checked(deadline), else: k - 1
    records(procs, rest, w, node, [r | acc], deadline, k)
  end

  defp records([], <<>>, _w, _node, acc, _deadline, _k), do: rev(acc, [])

  defp checked(deadline) do
    in_time!(deadline)
    @check_every
  end

  # :lists.reverse/1 in plain code: it yields like any code, where the BIF builds a reversed
  # million-element list in one call.
  defp rev([h | t], acc), do: rev(t, [h | acc])
  defp rev([], acc), do: acc

  # The records at `indexes` only, in that order: one walk of the records to pick them (the
  # packed figures are read in place).
  defp selected(procs, shares, indexes, w, node) do
    picked = pick(procs, 0, :lists.usort(indexes), %{})

    for i <- indexes do
      <<r::64-native, d::64-native, u::64-native, p::64-native, s::64-native, st::64-native,
        un::64-native, b::64-native>> = binary_part(shares, i * @width, @width)

      record(Map.fetch!(picked, i), {r, d, u, p, s, st, un, b}, w, node)
    end
  end

  defp pick(_procs, _i, [], acc), do: acc
  defp pick([proc | rest], i, [i | more], acc), do: pick(rest, i + 1, more, Map.put(acc, i, proc))
  defp pick([_ | rest], i, want, acc), do: pick(rest, i + 1, want, acc)

  # `detail: :basic` records hold only what basic detail collects (see `basic_fields/0`).
  defp record(
         Collector.basic() = proc,
         {refs, distinct, uss, pss, shared, store, unresolved, _resolved},
         _w,
         node
       ),
       do: basic(proc, refs, distinct, uss, pss, shared, store, unresolved, node)

  defp record(
         Collector.process(
           pid: pid,
           listed_bytes: listed,
           registered_name: name,
           label: label,
           initial_call: init,
           current_function: cur,
           memory: mem,
           total_heap_size: theap,
           heap_size: heap,
           stack_size: stack,
           message_queue_len: mql,
           reductions: reds,
           minor_gcs: minor,
           fullsweep_after: fullsweep,
           bin_vheap_size: vheap,
           bin_old_vheap_size: old_vheap,
           old_heap_size: old_heap
         ),
         {refs, distinct, uss, pss, shared, store_bytes, unresolved, resolved},
         {w, estimable},
         node
       ) do
    # Up to OTP 26 the virtual binary heap counts NIF binaries at their real size while the VM
    # lists them at ~72 bytes: what the vheap holds beyond the listed bytes is native memory the
    # VM hides. On OTP 27+ it does not (see attribute/2), and a figure the VM's list lacked
    # (`:undefined`) is unknown too: nil. The heap counts every reference at its size: two
    # references to one store entry count it twice there, so `resolved` (each reference, store
    # binaries at their real size) is what to take away, not the entry's bytes once.
    estimated =
      if estimable and is_integer(vheap) and is_integer(old_vheap),
        do: max((vheap + old_vheap) * w - resolved, 0)

    %{
      @uncollected
      | pid: pid,
        node: node,
        registered_name: opt(name),
        label: opt(label),
        initial_call: opt(init),
        current_function: opt(cur),
        memory: mem,
        heap_size: bytes(heap, w),
        total_heap_size: bytes(theap, w),
        stack_size: bytes(stack, w),
        old_heap_size: bytes(old_heap, w),
        message_queue_len: mql,
        reductions: reds,
        binary_refs: refs,
        binary_bytes: listed,
        binary_distinct: distinct,
        binary_uss: uss,
        binary_pss: pss,
        binary_shared: shared,
        # Unknown (nil) with its estimate: never the store part passed off as the whole.
        native_bytes: estimated && store_bytes + estimated,
        native_store_bytes: store_bytes,
        native_estimated_bytes: estimated,
        unresolved_store_binaries: unresolved,
        minor_gcs: opt(minor),
        fullsweep_after: opt(fullsweep),
        bin_vheap_size: bytes(vheap, w),
        bin_old_vheap_size: bytes(old_vheap, w)
    }
  end

  # One map literal per record: the VM builds it from a literal key tuple that every record
  # shares, where an update of a map of every field merged the keys at every record (measured at
  # 50k processes: 0.5 against 0.1 µs per record). 13 fields: 16 words, 18 with the list cell
  # (144 bytes), against 30 and 32 for the 27-field map of every field with the uncollected ones
  # nil. With `reductions: true` (a leak scan's first activity sample) the record carries them.
  defp basic(
         Collector.basic(
           pid: pid,
           listed_bytes: listed,
           registered_name: name,
           label: label,
           memory: mem,
           reductions: reds
         ),
         refs,
         distinct,
         uss,
         pss,
         shared,
         store,
         unresolved,
         node
       ) do
    basic_map(
      pid,
      node,
      opt(name),
      opt(label),
      mem,
      reds,
      refs,
      listed,
      distinct,
      uss,
      pss,
      shared,
      store,
      unresolved
    )
  end

  defp basic_map(
         pid,
         node,
         name,
         label,
         mem,
         :undefined,
         refs,
         listed,
         distinct,
         uss,
         pss,
         shared,
         store,
         unresolved
       ) do
    %{
      pid: pid,
      node: node,
      registered_name: name,
      label: label,
      memory: mem,
      binary_refs: refs,
      binary_bytes: listed,
      binary_distinct: distinct,
      binary_uss: uss,
      binary_pss: pss,
      binary_shared: shared,
      native_store_bytes: store,
      unresolved_store_binaries: unresolved
    }
  end

  defp basic_map(
         pid,
         node,
         name,
         label,
         mem,
         reds,
         refs,
         listed,
         distinct,
         uss,
         pss,
         shared,
         store,
         unresolved
       ) do
    %{
      pid: pid,
      node: node,
      registered_name: name,
      label: label,
      memory: mem,
      reductions: reds,
      binary_refs: refs,
      binary_bytes: listed,
      binary_distinct: distinct,
      binary_uss: uss,
      binary_pss: pss,
      binary_shared: shared,
      native_store_bytes: store,
      unresolved_store_binaries: unresolved
    }
  end

  # current_function is `undefined` for a process running native code, a label for a process
  # without one (or on OTP before 27), a GC figure when the VM's list lacked its key.
  defp opt(:undefined), do: nil
  defp opt(v), do: v

  defp bytes(words, w) when is_integer(words), do: words * w
  defp bytes(:undefined, _w), do: nil

  defp shared({key, size, holders, refc}) do
    import Bitwise

    {kind, id} = if key >= 1 <<< 62, do: {:store, key - (1 <<< 62)}, else: {:binary, key}

    %{kind: kind, id: id, size: size, holders: holders, refc: refc}
  end

  @doc """
  The first `n` records by `metric` (a field, or a function of the record), largest first;
  equal ones the larger pid first (a stable order), and a figure that is unknown (`nil`) below
  every known one.
  """
  @spec top([process_record()], pos_integer(), atom() | (process_record() -> number() | nil)) ::
          [process_record()]
  def top(records, n, metric), do: top(records, n, metric, [])

  # Scans running beside this one that top_processes/4 may have to drop (its ranking keeps this
  # many more than asked).
  @top_slack 8

  @doc """
  The `n` processes of `node` with the largest `opts.by` (an accounting metric), ranked as
  `top/3` ranks, without the scan's own processes (see `own_scan?/2`; `scanner` is the scanning
  process). `opts` are `snapshot/2`'s. Where the figures the scan leaves hold the metric (see
  `top_select/2`) the ranking runs in Rust over the whole node's figures and records are built
  for the first few only; otherwise every record is built and ranked here.
  """
  @spec top_processes(node(), pos_integer(), map(), pid()) ::
          {:ok, [process_record()]} | {:error, term()}
  def top_processes(node, n, opts, scanner) do
    opts = Map.put_new(opts, :top_shared, 0)

    case top_select(opts.by, n + @top_slack) do
      nil ->
        with {:ok, s} <- snapshot(node, opts),
             do: {:ok, top_except(s.processes, n, opts.by, scanner)}

      select ->
        with {:ok, s} <- snapshot(node, Map.put(opts, :select, select)),
             do: {:ok, without_scan(s.processes, n, scanner)}
    end
  end

  @doc """
  `top/3` without the scan's own processes (see `own_scan?/2`; `scanner` is the scanning
  process).
  """
  @spec top_except([process_record()], pos_integer(), atom(), pid()) :: [process_record()]
  def top_except(records, n, metric, scanner) do
    records
    |> top(n + @top_slack, metric)
    |> without_scan(n, scanner)
  end

  # The first `n` of ranked records that are not the scan's own.
  defp without_scan(ranked, n, scanner),
    do: ranked |> Enum.reject(&own_scan?(&1, scanner)) |> Enum.take(n)

  # Where `top_select/2` finds each metric without records: its field in the attribution's
  # packed figures (their row, as `records/7` reads it), in a compact scan's `extra` (memory,
  # listed bytes, reductions) or, by name, in the collector's records.
  @share_fields Map.new(
                  Enum.with_index(
                    ~w(binary_refs binary_distinct binary_uss binary_pss binary_shared
                       native_store_bytes unresolved_store_binaries)a
                  )
                )
  @extra_fields %{memory: 0, binary_bytes: 1}
  @record_field %{binary_bytes: :listed_bytes}
  # Records' figures that no field holds: the estimate made from the binary heap and the
  # attribution together.
  @derived [:native_bytes, :native_estimated_bytes]

  @doc """
  A `:select` function for `snapshot/2` that picks the `k` processes with the largest `metric`,
  in `top/3`'s order, from the figures the scan leaves: the attribution's (`binary_*`,
  `native_store_bytes`), a compact scan's memory and listed bytes, or the collector's records
  (`memory`, heap sizes, `reductions`, ...). One dirty NIF call ranks the whole node (a bounded
  heap: no sort of it all). `nil` for a metric made from several figures (`native_bytes`,
  `native_estimated_bytes`): rank built records with `top/3` then.
  """
  @spec top_select(atom(), non_neg_integer()) :: nil | (map() -> [non_neg_integer()])
  def top_select(metric, _k) when metric in @derived, do: nil
  def top_select(metric, k), do: &top_indexes(&1, metric, k)

  defp top_indexes(%{shares: shares, pids: pids}, metric, k)
       when is_map_key(@share_fields, metric) do
    field = @share_fields[metric]
    Binscope.Native.accounting_top_packed(shares, div(@width, 8), field, pids, k)
  end

  defp top_indexes(%{extra: extra, pids: pids}, metric, k)
       when is_map_key(@extra_fields, metric) do
    field = @extra_fields[metric]
    Binscope.Native.accounting_top_packed(extra, div(@extra_width, 8), field, pids, k)
  end

  defp top_indexes(%{procs: []}, _metric, _k), do: []

  defp top_indexes(%{procs: [first | _] = procs}, metric, k) do
    field = Map.get(@record_field, metric, metric)

    case Collector.field_index(elem(first, 0), field) do
      nil -> raise ArgumentError, "no #{inspect(metric)} in #{inspect(elem(first, 0))} records"
      slot -> Binscope.Native.accounting_top_records(procs, slot, k)
    end
  end

  @doc """
  Whether `record` is a scan's own process: `scanner` (the scanning process, on a local scan) or
  a process running the collector's code when it was read (a scan on a remote node, or another
  caller's scan). They are Binscope, not the application, and their heaps are at their largest
  while they run. A `detail: :basic` record has no current function: only `scanner` is known.
  """
  @spec own_scan?(process_record(), pid()) :: boolean()
  def own_scan?(record, scanner) do
    record.pid == scanner or
      case Map.get(record, :current_function) do
        {m, _, _} -> m in :binscope_collector.modules()
        _ -> false
      end
  end

  # A chunk of records at a time, merged into the best `n` so far: :lists.sort/1 on
  # {figure, pid, record} (pids are unique, records never compared), reversed. No sort of the
  # whole node: at a million records one sorted a list of a million tuples and its merge
  # passes, each a copy of the list (measured before: 21 ms without a yield in
  # lists:rkeymerge3 at 1M processes).
  @top_chunk 4096
  defp top([], _n, _metric, best), do: Enum.map(best, &elem(&1, 2))

  defp top(records, n, metric, best) do
    {chunk, rest} = Enum.split(records, @top_chunk)

    best =
      chunk
      |> Enum.reduce(best, &[{rank(figure(&1, metric)), &1.pid, &1} | &2])
      |> :lists.sort()
      |> :lists.reverse()
      |> Enum.take(n)

    top(rest, n, metric, best)
  end

  defp figure(record, metric) when is_atom(metric), do: Map.fetch!(record, metric)
  defp figure(record, metric), do: metric.(record)

  # Unknown below every figure, negative ones too (a growth): in term order a 1-tuple sorts
  # below any 2-tuple, where an atom would sort above every number.
  defp rank(nil), do: {0}
  defp rank(figure), do: {1, figure}

  @doc """
  Where a node's memory is, in bytes: every `:erlang.memory/0` category, the store's live bytes,
  jemalloc's allocated and resident bytes, OS RSS (`:unavailable` off Linux), and `unaccounted`
  (RSS minus the VM's total and the NIF's resident bytes). Cheap: no process is scanned. Bounded
  by `deadline` (see `Binscope.Remote`).
  """
  @spec node_memory(node(), Remote.deadline()) :: {:ok, map()} | {:error, term()}
  def node_memory(node, deadline) do
    with {:ok, raw} <- Remote.call(node, :node_memory, [], deadline) do
      {:ok, memory_report(raw)}
    end
  end

  defp memory_report(%{node: node, erlang: erl, rss: rss, store: store, allocator: alloc} = raw) do
    store_live = if is_map(store), do: store.live_bytes, else: 0
    {allocated, resident} = if is_map(alloc), do: {alloc.allocated, alloc.resident}, else: {0, 0}

    erl
    |> Map.merge(%{
      node: node,
      store_live_bytes: store_live,
      native_allocated: allocated,
      native_resident: resident,
      rss: rss,
      binscope_loaded: is_map(store)
    })
    |> Map.merge(Binscope.Memory.Breakdown.fields(raw, resident))
  end
end
