defmodule Binscope.Leaks do
  @moduledoc """
  The binary-leak finder: which processes hold binaries that only a garbage collection would
  free, how many bytes a GC gives back, and what to change.

  ## Modes and what they cost

  - `:targeted` (default): one `detail: :basic` sweep of every process (binary lists, memory
    and reductions) ranks them by the bytes of binaries only they reference (`binary_uss`: a
    GC can free at most that; every binary attributed over the whole node, in Rust, which then
    picks the top `4 * candidates` from the packed figures: records are built for those only).
    They get full details (old and young binary heaps) and, `idle_ms` after their first look
    (default #{Binscope.Accounting.Options.default_text(:leaks, :idle_ms)}), a second look at their reductions and mailbox. The first look
    is the sweep's, or, for the processes the sweep reads in its last `idle_ms`, a read of
    their reductions just before the sweep (a direct read, without the round trip the binary
    list costs): the window runs during the sweep, not after it. They are then ranked by
    `likely_garbage_bytes`: all of their `binary_uss` when idle over that window (an idle
    process runs no GC), only what their old binary heap holds when running (young garbage goes
    at their next minor GC anyway; old-heap binaries wait for a major one; the old binary heap
    counts store binaries at their size on OTP 25 and, with `Binscope.Store.GcPressure`, on
    OTP 27+, but other NIFs' resource binaries only at ~72 bytes there). A major GC is forced
    on the top `candidates` (default #{Binscope.Accounting.Options.default_text(:leaks, :candidates)}) only. Latency cost: the `idle_ms` wait, and each
    collected process stops for its own GC (microseconds for a small heap, milliseconds for a
    large one); nothing else is touched. The right default on a production node.
  - `:full`: forces a major GC of *every* process, one at a time, as recon's `bin_leak/1` does,
    but measured in bytes: one GC round over the node (binary lists before and after each
    collection), ranked in one dirty NIF call that returns the top rows only
    (`binscope_core::leaks::select`); full details are then read for those. Every process on
    the node pauses for its GC, and the scan takes time proportional to the whole node's live
    heap. The round's results (about 190 bytes a process) are held by the scan's own process
    until ranked, in a heap reserved for them (on the node scanned from). Use on a test node,
    or knowingly.
  - `:dry_run`: GCs nothing. Returns the targeted mode's ranking with `estimated_bytes` (an
    upper bound: the bytes only that process references), `likely_garbage_bytes` and
    `reclaimed_bytes: nil`.

  The scan runs in a process of its own (`Binscope.leaks/1`), so the caller's heap never holds
  it; only the results are copied to the caller.

  `reclaimed_bytes` is exact: a binary counts only when the collections freed it (no other
  holder: process, ETS table, port or NIF), once, split among the processes that dropped it.
  Store binaries count at their real size and are checked against the store itself.
  `reclaimed_refs` is recon's measure: references dropped.
  """

  alias Binscope.{Accounting, Collector, Remote}
  alias Binscope.Accounting.Heap

  require Collector

  @otp_loops [:gen_server, :gen_statem, :gen_event, :gen]
  # Binscope's own processes (the scan, its workers and bounded calls) stay out of the results.
  @own_modules :binscope_collector.modules() ++
                 [Binscope.Remote, Binscope.Leaks, Binscope.Accounting, Binscope.Scanner] ++
                 [Binscope.CLI, Binscope.Memory.Watch, Binscope.Memory.Recorder]
  # OTP's own processes: nothing a user can change in them, so no advice.
  @system_names [:init, :erts_code_purger, :erl_prim_loader, :code_server, :user, :user_drv] ++
                  [:standard_error, :standard_error_sup, :application_controller, :kernel_sup] ++
                  [:kernel_refc, :kernel_safe_sup, :logger, :logger_sup, :logger_handler_watcher] ++
                  [:logger_proxy, :logger_std_h_default, :error_logger, :file_server_2, :rex] ++
                  [:inet_db, :global_name_server, :global_group, :global_group_check, :net_kernel] ++
                  [:net_sup, :auth, :erl_epmd, :erl_signal_server, :socket_registry, :erpc] ++
                  [:elixir_sup, :elixir_config, :elixir_code_server]
  @system_initial [:application_master, :group, :prim_file, :user_drv, :erl_prim_loader] ++
                    [:code_server, :init, :erts_code_purger, :erts_dirty_process_signal_handler] ++
                    [:erts_literal_area_collector]
  # Where a process blocked in a passive receive waits: it cannot hibernate there.
  @recv_modules [:prim_inet, :gen_tcp, :gen_udp, :gen_sctp, :inet_tcp, :gen_tcp_socket] ++
                  [:gen_udp_socket, :socket, :prim_socket, :ssl]
  @doc """
  Runs the leak finder on `node` with validated options (see `Binscope.leaks/1`), before
  `opts.deadline` (or `opts.timeout` ms from now). Throws the collector's timeout when it runs
  out (`Binscope.Remote.bounded/1` turns it into `{:error, :timeout}`, as `Binscope.leaks/1` does).
  """
  @spec find(node(), map()) :: {:ok, [map()]} | {:error, term()}
  def find(node, opts) do
    # A deadline for the whole scan (Binscope.leaks/1 gives one; a bare timeout works too).
    opts = Map.put_new_lazy(opts, :deadline, fn -> Remote.deadline(opts.timeout) end)
    # Validated options have every default (Binscope.Accounting.Options, the one schema).
    %{mode: mode, limit: limit, candidates: k} = opts

    case mode do
      :full -> full(node, limit, opts)
      _ -> ranked(node, mode, limit, k, opts)
    end
  end

  # Ranking needs only the binary lists: the cheap `:basic` sweep, which also takes each
  # process's reductions (the activity window's first sample). Every binary is attributed over
  # the whole node in Rust, and the NIF picks the shortlist by `binary_uss` from the packed
  # figures: records are built for the shortlist only, never for every process (at a million
  # processes, a map each and a sort of them all were most of the scan's cost).
  defp ranked(node, mode, limit, k, opts) do
    pool = if mode == :dry_run, do: pool_size(limit), else: pool_size(k)
    # One more than the pool: the caller is in a local scan's list and is dropped.
    select = fn %{shares: packed} -> Binscope.Native.leaks_top_uss(packed, pool + 1) end

    # window_ms: the collector reads the reductions of the pids it sweeps last before its
    # sweep (a direct read, without the round trip of the binary list), so the activity window
    # runs during the sweep; `sampled_at` is when every record's first sample was in.
    snap_opts =
      opts
      |> Map.merge(%{top_shared: 0, detail: :basic, reductions: true, select: select})
      |> Map.put(:window_ms, opts.idle_ms)

    with {:ok, snap} <- Accounting.snapshot(node, snap_opts) do
      swept = Map.get_lazy(snap, :sampled_at, fn -> System.monotonic_time(:microsecond) end)
      me = self()
      by_uss = snap.processes |> Enum.reject(&(&1.pid == me)) |> Enum.take(pool)
      Remote.check!(opts.deadline)

      case mode do
        :dry_run ->
          with {:ok, ranked} <- shortlist(node, by_uss, swept, opts) do
            {:ok, ranked |> Enum.take(limit) |> Enum.map(&estimate/1)}
          end

        :targeted ->
          # A forced GC only where there is likely garbage: never on a process with nothing to
          # gain. (A process whose slices pin parents it has kept since its last collection holds
          # them in its old binary heap: likely garbage to the ranking, so it is collected, and
          # the results then tell pinned bytes from freed ones.)
          with {:ok, ranked} <- shortlist(node, by_uss, swept, opts) do
            gain = Enum.filter(ranked, &(&1.likely_garbage_bytes > 0))
            collect(node, Enum.take(gain, k), snap, limit, opts.deadline)
          end
      end
    end
  end

  defp pool_size(k), do: max(4 * k, k + 16)

  # The bytes only a process references bound what a GC can free: the top by that make a
  # shortlist a few times `k` long. Their full details (old and young binary heaps) and a second
  # activity sample `idle_ms` later rank them by what is likely garbage that only a forced GC
  # frees soon (`binscope_core::leaks::rank`).
  # The window runs from each record's first sample (the sweep's, or the collector's read of
  # the reductions before the sweep for the pids it sweeps last; `swept` is when the last of
  # them was in) to the second sample: at least `idle_ms` for every candidate, however long the
  # sweep, attribution and the details took meanwhile.
  defp shortlist(_node, [], _swept, _opts), do: {:ok, []}

  defp shortlist(node, pool, swept, opts) do
    with {:ok, detailed} <- with_details(node, pool, opts),
         :ok <- idle(opts.idle_ms, swept, opts.deadline),
         {:ok, act} <- Remote.call(node, :activity, [Enum.map(detailed, & &1.pid)], opts.deadline) do
      act = Map.new(act, fn {pid, reds, mql} -> {pid, {reds, mql}} end)
      alive = Enum.filter(detailed, &(Map.has_key?(act, &1.pid) and not own?(&1)))

      candidates =
        for r <- alive do
          {reds, mql} = Map.fetch!(act, r.pid)
          # The target of a process_info/2 call pays one reduction for it (OTP 25: a signal it
          # handles). Between the sweep's sample and the details' the sweep's own call is the
          # only probe; from the details' to the second sample, the details' calls (what
          # binscope_core::leaks::rank allows for). Anything beyond is the process's own work.
          delta =
            case r do
              %{details_reductions: dr} when is_integer(dr) and is_integer(r.reductions) ->
                max(dr - r.reductions - 1, 0) + max(reds - dr, 0)

              _ ->
                max(reds - r.reductions, 0)
            end

          # A binary heap figure the VM did not report (nil) ranks as an empty heap: the
          # ranking then rests on binary_uss and activity alone.
          {r.binary_uss, r.bin_vheap_size || 0, r.bin_old_vheap_size || 0, delta, mql}
        end

      ranked = Binscope.Native.leaks_rank(candidates)
      alive = List.to_tuple(alive)

      {:ok,
       for {i, likely} <- ranked do
         alive |> elem(i) |> Map.put(:likely_garbage_bytes, likely)
       end}
    end
  end

  # The activity window (from `swept`, in microseconds), unless it would end past the deadline:
  # then the scan gives up now.
  defp idle(ms, swept, deadline) do
    wait = max(ceil_div(swept + ms * 1000 - System.monotonic_time(:microsecond), 1000), 0)
    if Remote.left(deadline) > wait, do: Process.sleep(wait), else: {:error, :timeout}
  end

  defp ceil_div(a, b) when a > 0, do: div(a + b - 1, b)
  defp ceil_div(_a, _b), do: 0

  @detail_fields [
    :registered_name,
    :label,
    :message_queue_len,
    :initial_call,
    :current_function,
    :heap_size,
    :total_heap_size,
    :stack_size,
    :old_heap_size,
    :reductions,
    :minor_gcs,
    :fullsweep_after,
    :bin_vheap_size,
    :bin_old_vheap_size
  ]

  # Full detail for a few records, keeping their whole-node binary attribution.
  defp with_details(node, records, opts) do
    with {:ok, raw} <- Remote.call(node, :details, [Enum.map(records, & &1.pid)], opts.deadline) do
      # Only the fields the collector gathered: the binary attribution stays the whole node's.
      details = raw |> Accounting.unattributed() |> Map.new(&{&1.pid, &1})

      {:ok,
       for r <- records, d = details[r.pid], d != nil do
         # The sweep's reductions, where it took them, stay: the activity window starts there.
         # The details' are kept beside them: each process_info/2 of a process costs it a
         # reduction (see shortlist/4).
         if r.reductions do
           r
           |> Map.merge(Map.take(d, List.delete(@detail_fields, :reductions)))
           |> Map.put(:details_reductions, d.reductions)
         else
           Map.merge(r, Map.take(d, @detail_fields))
         end
       end}
    end
  end

  defp estimate(r) do
    r
    |> identity()
    |> Map.merge(%{
      reclaimed_bytes: nil,
      reclaimed_refs: nil,
      estimated_bytes: r.binary_uss,
      likely_garbage_bytes: r.likely_garbage_bytes,
      unresolved_store_binaries: r.unresolved_store_binaries,
      suggestion: nil,
      reason: "dry run: up to #{r.binary_uss} bytes are referenced only by this process"
    })
  end

  defp identity(r) do
    Map.take(r, [
      :pid,
      :node,
      :registered_name,
      :label,
      :initial_call,
      :current_function,
      :message_queue_len,
      :total_heap_size
    ])
  end

  defp own?(r) do
    Enum.any?([r[:initial_call], r[:current_function]], fn
      {m, _, _} -> m in @own_modules
      _ -> false
    end)
  end

  defp system?(r) do
    r[:registered_name] in @system_names or
      match?({m, _, _} when m in @system_initial, r[:initial_call])
  end

  defp passive_recv?(%{current_function: {m, f, _}}) when m in @recv_modules,
    do: String.starts_with?(Atom.to_string(f), "recv")

  defp passive_recv?(_), do: false

  defp collect(_node, [], _snap, _limit, _deadline), do: {:ok, []}

  defp collect(node, candidates, snap, limit, deadline) do
    with {:ok, round} <- Remote.call(node, :gc_round, [Enum.map(candidates, & &1.pid)], deadline) do
      w = Map.get(snap, :word_size, :erlang.system_info(:wordsize))
      by_pid = Map.new(candidates, &{&1.pid, &1})

      # Activity from the candidate's sweep to its collection.
      rows =
        for {res, rec, _uss} <- rank_round(round, w, limit) do
          Collector.gc(pid: pid, reductions: reds) = res
          r = Map.fetch!(by_pid, pid)
          {res, rec, r, max(reds - (r.reductions || reds), 0)}
        end

      finish(node, rows, w, deadline)
    end
  end

  # A full scan collects every process on the node but the caller (the collector lists them
  # there, as recon's bin_leak/1 does), in one GC round. The ranking of every process runs in
  # one dirty NIF that returns the top rows only; identity and GC facts are then fetched for
  # those few (full details, after their collection). Binscope's own processes are dropped
  # from the rows; when that leaves fewer than `limit`, the ranking is asked for more.
  # Heap words a full round's results take on the scan's heap, per process (measured at the end
  # of a round over 1M idle processes holding one binary each, OTP 25: 23). A local round keeps
  # no binary list in its results (the NIF takes them, `compact: true`): a record and its cons.
  @round_words 24
  @compact_round_words 12

  defp full(node, limit, opts) do
    deadline = opts.deadline

    # A local round's results (a record and two binary lists a process) arrive in this process
    # in pieces: room for them all is reserved until they are ranked, instead of a heap grown
    # through collections that each copy everything so far (at 1M processes: 1.1-1.9 s of them,
    # the last 0.7-0.9 s; with the room, one of 0.1-0.3 s).
    # Here, the round's lists go to this node's NIF as they are read (see
    # :binscope_collector_gc): the results carry none, and the ranking reads them from the NIF.
    local = node == node() and Code.ensure_loaded?(Binscope.Native)

    words =
      cond do
        local -> @compact_round_words * :erlang.system_info(:process_count)
        node == node() -> @round_words * :erlang.system_info(:process_count)
        true -> 0
      end

    Heap.reserve(words, 0, fn ->
      with {:ok, round} <- Remote.call(node, :gc_round, [:all, %{compact: local}], deadline) do
        Remote.check!(deadline)
        w = Map.get(round, :word_size, :erlang.system_info(:wordsize))
        full_top(node, round, w, limit, limit + 16, deadline)
      end
    end)
  end

  defp full_top(node, round, w, limit, want, deadline) do
    top = rank_round(round, w, want)
    pids = Enum.map(top, fn {res, _, _} -> Collector.gc(res, :pid) end)

    with {:ok, raw} <- Remote.call(node, :details, [pids], deadline) do
      # The fields the collector gathered; estimated_bytes is what only the process referenced
      # before the collections, from the round's own attribution of every process.
      details = raw |> Accounting.unattributed() |> Map.new(&{&1.pid, &1})

      # Activity from its collection to its details.
      rows =
        for {res, rec, uss} <- top,
            Collector.gc(pid: pid, reductions: reds) = res,
            d = details[pid],
            d != nil and not own?(d) do
          {res, rec, %{d | binary_uss: uss}, max((d.reductions || reds) - reds, 0)}
        end

      if length(rows) < limit and length(top) == want,
        do: full_top(node, round, w, limit, 2 * want, deadline),
        else: finish(node, Enum.take(rows, limit), w, deadline)
    end
  end

  # The top `limit` of a GC round (`binscope_core::leaks::select::full_ranking`): the processes
  # that waste something (what the collection freed, each binary once over the round, plus what
  # small slices pin), most waste first, then the others in round order, as
  # `[{result, {refs, bytes, binaries, retained_distinct, retained_pss, unresolved_before},
  # uss_before}]`. The NIF reads the round's records in place (their layout is checked in
  # `Binscope.Collector`), or a compact round's lists from its `round`.
  defp rank_round(round, w, limit) do
    results = round.results

    rows =
      case round do
        %{round: r} -> Binscope.Native.leaks_full_rank_round(r, round.live_store_keys, w, limit)
        _ -> Binscope.Native.leaks_full_rank(results, round.live_store_keys, w, limit)
      end

    picked = pick(results, 0, rows |> Enum.map(&elem(&1, 0)) |> :lists.usort(), %{})

    for {i, {refs, bytes, bins}, [_refs, distinct, _uss, pss | _], uss, unresolved} <- rows,
        do: {Map.fetch!(picked, i), {refs, bytes, bins, distinct, pss, unresolved}, uss}
  end

  defp pick(_list, _i, [], acc), do: acc
  defp pick([x | rest], i, [i | more], acc), do: pick(rest, i + 1, more, Map.put(acc, i, x))
  defp pick([_ | rest], i, want, acc), do: pick(rest, i + 1, want, acc)

  defp finish(node, rows, w, deadline) do
    Remote.check!(deadline)
    pids = Enum.map(rows, fn {res, _, _, _} -> Collector.gc(res, :pid) end)

    with {:ok, queues} <- Remote.call(node, :queue_data, [pids], deadline) do
      off_heap = for {pid, :off_heap} <- queues, into: MapSet.new(), do: pid

      facts =
        Enum.map(rows, fn {res, rec, r, delta} -> facts(res, rec, r, delta, off_heap, w) end)

      advice = Binscope.Native.leaks_suggest(facts)

      {:ok,
       [rows, facts, advice]
       |> Enum.zip()
       |> Enum.map(fn {{res, rec, r, _}, f, adv} -> result(res, rec, f, adv, r) end)}
    end
  end

  defp facts(res, {_refs, bytes, _bins, distinct, pss, _unresolved}, r, reds_delta, off_heap, w) do
    Collector.gc(
      pid: pid,
      total_heap_size: heap,
      stack_size: stack,
      message_queue_len: mql
    ) = res

    cur_mod = with {m, _, _} <- r.current_function, do: m
    off_heap? = MapSet.member?(off_heap, pid)

    %{
      reclaimed_bytes: bytes,
      retained_binary_bytes: pss,
      retained_binaries: distinct,
      heap_bytes: (heap + stack) * w,
      message_queue_len: mql,
      reductions_delta: reds_delta,
      otp_behaviour: cur_mod in @otp_loops,
      fullsweep_after: r.fullsweep_after || 0,
      minor_gcs: r.minor_gcs || 0,
      system_process: system?(r),
      passive_recv: passive_recv?(r),
      off_heap_queue: off_heap?
    }
  end

  defp result(_res, {refs, bytes, bins, _distinct, pss, unresolved}, facts, advice, r) do
    {suggestion, reason, pinned, waste} = advice

    r
    |> identity()
    |> Map.merge(%{
      reclaimed_bytes: bytes,
      reclaimed_refs: refs,
      reclaimed_binaries: bins,
      retained_binary_bytes: pss,
      pinned_bytes: pinned,
      waste_bytes: waste,
      off_heap_queue: facts.off_heap_queue,
      estimated_bytes: r.binary_uss,
      likely_garbage_bytes: Map.get(r, :likely_garbage_bytes),
      # Listed before the GC but not identifiable (see `Binscope.processes/1`): in no figure.
      unresolved_store_binaries: unresolved,
      suggestion: suggestion,
      reason: reason
    })
  end
end
