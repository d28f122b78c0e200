defmodule Binscope.Leaks do
  @moduledoc """
  The binary-leak finder: which processes hold binaries that only a garbage collection would
  free, how many bytes a GC gives back, and what to change.

  ## Modes and what they cost

  - `:targeted` (default): one snapshot of every process (as `Binscope.processes/1`), then ranks
    them by the bytes of binaries only they reference (`binary_uss`: a GC can free at most that)
    and forces a major GC on the top `candidates` only (default 20). Latency cost: each collected
    process stops for its own GC (microseconds for a small heap, milliseconds for a large one);
    nothing else is touched. The right default on a production node.
  - `:full`: forces a major GC of *every* process, one at a time, as recon's `bin_leak/1` does,
    but measured in bytes. Every process on the node pauses for its GC, and the scan takes time
    proportional to the whole node's live heap. Use on a test node, or knowingly.
  - `:dry_run`: GCs nothing. Returns the ranking with `estimated_bytes` (an upper bound: the
    bytes only that process references) and `reclaimed_bytes: nil`.

  `reclaimed_bytes` is exact: a binary counts only when the collections freed it (no other
  holder: process, ETS table, port or NIF), once, split among the processes that dropped it.
  Store binaries count at their real size and are checked against the store itself.
  `reclaimed_refs` is recon's measure: references dropped.
  """

  alias Binscope.{Accounting, Remote}

  @suggestions %{
    "hibernate_after" => :hibernate_after,
    "hibernate_idle" => :hibernate_idle,
    "fullsweep_after" => :fullsweep_after,
    "binary_copy" => :binary_copy,
    "off_heap_queue" => :off_heap_queue,
    "none" => :none
  }
  @otp_loops [:gen_server, :gen_statem, :gen_event, :gen]

  @doc "Runs the leak finder on `node` with validated options (see `Binscope.leaks/1`)."
  @spec find(node(), map()) :: {:ok, [map()]} | {:error, term()}
  def find(node, opts) do
    mode = Map.get(opts, :mode, :targeted)
    limit = Map.get(opts, :limit, 10)
    k = Map.get(opts, :candidates, 20)

    with {:ok, snap} <- Accounting.snapshot(node, Map.put(opts, :top_shared, 0)) do
      me = self()
      ranked = snap.processes |> Enum.reject(&(&1.pid == me)) |> rank()

      case mode do
        :dry_run ->
          {:ok, ranked |> Enum.take(limit) |> Enum.map(&estimate/1)}

        :targeted ->
          collect(node, Enum.take(ranked, k), snap, limit, opts.timeout)

        :full ->
          collect(node, ranked, snap, limit, opts.timeout)
      end
    end
  end

  # Most likely garbage first: bytes only this process references (a GC frees at most these),
  # then its fair share of what it shares, then the old heap's binaries.
  defp rank(records) do
    Enum.sort_by(records, &{&1.binary_uss, &1.binary_pss, &1.bin_old_vheap_size}, :desc)
  end

  defp estimate(r) do
    r
    |> identity()
    |> Map.merge(%{
      reclaimed_bytes: nil,
      reclaimed_refs: nil,
      estimated_bytes: r.binary_uss,
      suggestion: nil,
      reason: "dry run: up to #{r.binary_uss} bytes are referenced only by this process"
    })
  end

  defp identity(r) do
    Map.take(r, [
      :pid,
      :node,
      :registered_name,
      :initial_call,
      :current_function,
      :message_queue_len,
      :total_heap_size
    ])
  end

  defp collect(node, candidates, snap, limit, timeout) do
    by_pid = Map.new(candidates, &{&1.pid, &1})

    with {:ok, round} <- Remote.call(node, :gc_round, [Map.keys(by_pid)], timeout) do
      results = round.results
      before = Enum.map(results, &elem(&1, 1))
      after_ = Enum.map(results, &elem(&1, 2))

      reclaimed = Binscope.Native.accounting_reclaimed(before, after_, round.live_store_keys)
      {retained, _, _} = Binscope.Native.accounting_attribute(after_, 0)
      w = Map.get(snap, :word_size, :erlang.system_info(:wordsize))

      found =
        [results, reclaimed, retained]
        |> Enum.zip_with(fn [res, rec, ret] -> result(res, rec, ret, by_pid, w) end)
        |> Enum.sort_by(&{&1.reclaimed_bytes, &1.reclaimed_refs}, :desc)
        |> Enum.take(limit)

      {:ok, found}
    end
  end

  defp result({pid, _before, _after, reds, heap, stack, mql}, {refs, bytes, bins}, ret, by_pid, w) do
    r = Map.fetch!(by_pid, pid)
    {_refs, _bytes, distinct, _uss, pss, _shared, _store} = ret
    cur_mod = with {m, _, _} <- r.current_function, do: m

    facts = %{
      reclaimed_bytes: bytes,
      retained_binary_bytes: pss,
      retained_binaries: distinct,
      heap_bytes: (heap + stack) * w,
      message_queue_len: mql,
      reductions_delta: max(reds - r.reductions, 0),
      otp_behaviour: cur_mod in @otp_loops,
      fullsweep_after: r.fullsweep_after,
      minor_gcs: r.minor_gcs
    }

    {name, reason} = Binscope.Native.accounting_suggest(facts)

    r
    |> identity()
    |> Map.merge(%{
      reclaimed_bytes: bytes,
      reclaimed_refs: refs,
      reclaimed_binaries: bins,
      retained_binary_bytes: pss,
      estimated_bytes: r.binary_uss,
      suggestion: Map.fetch!(@suggestions, name),
      reason: reason
    })
  end
end
