defmodule Binscope.Leaks do
  @moduledoc """
  The binary-leak finder: which processes hold binaries that only a garbage collection would
  free, how many bytes a GC gives back, and what to change.

  ## Modes and what they cost

  - `:targeted` (default): one `detail: :basic` sweep of every process (binary lists and
    memory: the items of a plain `process_info(pid, [:binary, :memory])` sweep) ranks them by
    the bytes of binaries only they reference (`binary_uss`: a GC can free at most that). The
    top `4 * candidates` get full details (old and young binary heaps, reductions) and, `idle_ms`
    later (default #{Binscope.Accounting.Options.default_text(:leaks, :idle_ms)}), a second look at their reductions and mailbox. They are then ranked by
    `likely_garbage_bytes`: all of their `binary_uss` when idle over that window (an idle
    process runs no GC), only what their old binary heap holds when running (young garbage goes
    at their next minor GC anyway; old-heap binaries wait for a major one; the old binary heap
    counts store binaries at their size on OTP 25 and, with `Binscope.Store.GcPressure`, on
    OTP 27+, but other NIFs' resource binaries only at ~72 bytes there). A major GC is forced
    on the top `candidates` (default #{Binscope.Accounting.Options.default_text(:leaks, :candidates)}) only. Latency cost: the `idle_ms` wait, and each
    collected process stops for its own GC (microseconds for a small heap, milliseconds for a
    large one); nothing else is touched. The right default on a production node.
  - `:full`: forces a major GC of *every* process, one at a time, as recon's `bin_leak/1` does,
    but measured in bytes. Every process on the node pauses for its GC, and the scan takes time
    proportional to the whole node's live heap. Use on a test node, or knowingly.
  - `:dry_run`: GCs nothing. Returns the targeted mode's ranking with `estimated_bytes` (an
    upper bound: the bytes only that process references), `likely_garbage_bytes` and
    `reclaimed_bytes: nil`.

  `reclaimed_bytes` is exact: a binary counts only when the collections freed it (no other
  holder: process, ETS table, port or NIF), once, split among the processes that dropped it.
  Store binaries count at their real size and are checked against the store itself.
  `reclaimed_refs` is recon's measure: references dropped.
  """

  alias Binscope.{Accounting, Collector, Remote}

  require Collector

  @otp_loops [:gen_server, :gen_statem, :gen_event, :gen]
  # Binscope's own processes (the scan, its workers and bounded calls) stay out of the results.
  @own_modules :binscope_collector.modules() ++
                 [Binscope.Remote, Binscope.Leaks, Binscope.Accounting] ++
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

    # Ranking needs only the binary lists: the cheap `:basic` sweep. The identity and GC facts
    # the results show are fetched for the few processes that make it into them.
    detail = if mode == :full, do: :full, else: :basic
    snap_opts = opts |> Map.put(:top_shared, 0) |> Map.put(:detail, detail)

    with {:ok, snap} <- Accounting.snapshot(node, snap_opts) do
      me = self()
      others = Enum.reject(snap.processes, &(&1.pid == me))
      # A full scan collects every process (in any order: the results are ranked after); the
      # other modes rank by binary_uss first.
      by_uss = if mode == :full, do: others, else: by_uss(others)
      Remote.check!(opts.deadline)

      case mode do
        :dry_run ->
          with {:ok, ranked} <- shortlist(node, by_uss, limit, opts) do
            {:ok, ranked |> Enum.take(limit) |> Enum.map(&estimate/1)}
          end

        :targeted ->
          # A forced GC only where there is likely garbage: never on a process with nothing to
          # gain. (A process whose slices pin parents it has kept since its last collection holds
          # them in its old binary heap: likely garbage to the ranking, so it is collected, and
          # the results then tell pinned bytes from freed ones.)
          with {:ok, ranked} <- shortlist(node, by_uss, k, opts) do
            gain = Enum.filter(ranked, &(&1.likely_garbage_bytes > 0))
            collect(node, Enum.take(gain, k), snap, limit, opts.deadline)
          end

        :full ->
          collect(node, Enum.reject(by_uss, &own?/1), snap, limit, opts.deadline)
      end
    end
  end

  # The bytes only a process references bound what a GC can free: the top by that make a
  # shortlist a few times `k` long. Their full details (old and young binary heaps) and a second
  # activity sample `idle_ms` later rank them by what is likely garbage that only a forced GC
  # frees soon (`binscope_core::leaks::rank`).
  defp shortlist(_node, [], _k, _opts), do: {:ok, []}

  defp shortlist(node, by_uss, k, opts) do
    pool = Enum.take(by_uss, max(4 * k, k + 16))

    with {:ok, detailed} <- with_details(node, pool, opts),
         :ok <- idle(opts.idle_ms, opts.deadline),
         {:ok, act} <- Remote.call(node, :activity, [Enum.map(detailed, & &1.pid)], opts.deadline) do
      act = Map.new(act, fn {pid, reds, mql} -> {pid, {reds, mql}} end)
      alive = Enum.filter(detailed, &(Map.has_key?(act, &1.pid) and not own?(&1)))

      candidates =
        for r <- alive do
          {reds, mql} = Map.fetch!(act, r.pid)
          # A binary heap figure the VM did not report (nil) ranks as an empty heap: the
          # ranking then rests on binary_uss and activity alone.
          {r.binary_uss, r.bin_vheap_size || 0, r.bin_old_vheap_size || 0,
           max(reds - r.reductions, 0), mql}
        end

      ranked = Binscope.Native.leaks_rank(candidates)
      alive = List.to_tuple(alive)

      {:ok,
       for {i, likely} <- ranked do
         alive |> elem(i) |> Map.put(:likely_garbage_bytes, likely)
       end}
    end
  end

  # The activity window, unless it would end past the deadline: then the scan gives up now.
  defp idle(ms, deadline) do
    if Remote.left(deadline) > ms, do: Process.sleep(ms), else: {:error, :timeout}
  end

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
  defp with_details(_node, [], _opts), do: {:ok, []}

  defp with_details(node, records, opts) do
    with {:ok, raw} <- Remote.call(node, :details, [Enum.map(records, & &1.pid)], opts.deadline) do
      # Only the fields the collector gathered: the binary attribution stays the whole node's.
      details = raw |> Accounting.unattributed() |> Map.new(&{&1.pid, &1})

      {:ok,
       for r <- records, d = details[r.pid], d != nil do
         Map.merge(r, Map.take(d, @detail_fields))
       end}
    end
  end

  # Bytes only this process references first (a GC frees at most these), then its fair share of
  # what it shares; pid breaks ties for a stable order.
  # (:lists.sort/1 on tuples: several times faster than a sort with a comparison function on
  # 100k records, and this runs between two looks at the deadline.)
  defp by_uss(records) do
    records
    |> Enum.map(&{&1.binary_uss, &1.binary_pss, &1.pid, &1})
    |> :lists.sort()
    |> Enum.reduce([], fn {_, _, _, r}, acc -> [r | acc] end)
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

  # Keys of unresolved binaries: 1 <<< 63 plus the listed address (binscope_core::accounting).
  defp unresolved?({key, _size, _refc}), do: key >= 0x8000_0000_0000_0000

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
      Remote.check!(deadline)
      results = round.results
      before = Enum.map(results, &Collector.gc(&1, :binaries_before))
      after_ = Enum.map(results, &Collector.gc(&1, :binaries_after))

      # What each collection gave back and what each process still holds (its binaries after
      # the round, attributed among them): one NIF call.
      reclaimed = Binscope.Native.leaks_reclaimed(before, after_, round.live_store_keys)
      Remote.check!(deadline)
      w = Map.get(snap, :word_size, :erlang.system_info(:wordsize))

      # Most processes of a full scan waste nothing: rank those that do (most waste first: what
      # the GC freed plus what small slices pin), then the rest in scan order, as a stable sort
      # of them all would, and build results for the top `limit` only.
      rounds = Enum.zip(results, reclaimed)
      wastes = Binscope.Native.leaks_waste(Enum.map(rounds, &waste_figures(&1, w)))

      {wasting, none} =
        rounds
        |> Enum.zip(wastes)
        |> Enum.map(fn {{_res, {refs, bytes, _, _, _}} = t, waste} -> {waste, bytes, refs, t} end)
        |> Enum.split_with(fn {waste, _, refs, _} -> waste > 0 or refs > 0 end)

      Remote.check!(deadline)
      ranked = wasting |> Enum.sort_by(fn {waste, b, refs, _} -> {waste, b, refs} end, :desc)
      top = Enum.take(ranked, limit) ++ Enum.take(none, max(limit - length(ranked), 0))
      top = Enum.map(top, &elem(&1, 3))
      pids = Enum.map(top, &Collector.gc(elem(&1, 0), :pid))
      by_pid = for r <- candidates, r.pid in pids, into: %{}, do: {r.pid, r}

      with {:ok, queues} <- Remote.call(node, :queue_data, [pids], deadline) do
        off_heap = for {pid, :off_heap} <- queues, into: MapSet.new(), do: pid
        facts = Enum.map(top, fn {res, rec} -> facts(res, rec, by_pid, off_heap, w) end)
        advice = Binscope.Native.leaks_suggest(facts)

        {:ok,
         [top, facts, advice]
         |> Enum.zip()
         |> Enum.map(fn {{res, rec}, f, adv} -> result(res, rec, f, adv, by_pid) end)}
      end
    end
  end

  # The ranking's figures only, {reclaimed_bytes, retained_binary_bytes, heap_bytes}: the
  # waste depends on nothing else (the results' suggestions take every fact).
  defp waste_figures({Collector.gc(total_heap_size: heap, stack_size: stack), rec}, w) do
    {_refs, bytes, _bins, _distinct, pss} = rec
    {bytes, pss, (heap + stack) * w}
  end

  defp facts(res, {_refs, bytes, _bins, distinct, pss}, by_pid, off_heap, w) do
    Collector.gc(
      pid: pid,
      reductions: reds,
      total_heap_size: heap,
      stack_size: stack,
      message_queue_len: mql
    ) = res

    r = Map.fetch!(by_pid, pid)
    cur_mod = with {m, _, _} <- r.current_function, do: m
    off_heap? = MapSet.member?(off_heap, pid)

    %{
      reclaimed_bytes: bytes,
      retained_binary_bytes: pss,
      retained_binaries: distinct,
      heap_bytes: (heap + stack) * w,
      message_queue_len: mql,
      reductions_delta: max(reds - (r.reductions || reds), 0),
      otp_behaviour: cur_mod in @otp_loops,
      fullsweep_after: r.fullsweep_after || 0,
      minor_gcs: r.minor_gcs || 0,
      system_process: system?(r),
      passive_recv: passive_recv?(r),
      off_heap_queue: off_heap?
    }
  end

  defp result(res, {refs, bytes, bins, _distinct, pss}, facts, advice, by_pid) do
    Collector.gc(pid: pid, binaries_before: before) = res
    {suggestion, reason, pinned, waste} = advice
    r = Map.fetch!(by_pid, pid)

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
      unresolved_store_binaries: Enum.count(before, &unresolved?/1),
      suggestion: suggestion,
      reason: reason
    })
  end
end
