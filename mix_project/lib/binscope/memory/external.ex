defmodule Binscope.Memory.External do
  @moduledoc """
  Refc binaries held outside processes: by ETS tables, `persistent_term`, ports, NIFs or
  messages in flight.

  A binary's reference count counts every reference, wherever it is; a scan of every process
  lists the references processes hold. A binary whose count exceeds its listed holders is
  therefore also held elsewhere (`shared_elsewhere`: exact, from the scan). A binary that
  no process references does not appear in any list at all: its bytes are what
  `:erlang.memory(:binary)` holds beyond the distinct binaries the scan saw
  (`only_elsewhere_bytes`, an estimate: `:erlang.memory(:binary)` also counts the allocator's
  per-block overhead, a few words per binary, and binaries created or freed during the scan).
  Binscope does not read table contents, so it names no table: `Binscope.ets_tables/1` lists
  the candidates.

  Cost: one basic scan (`Binscope.processes(detail: :basic)`'s collector cost) and one pass
  over every listed reference here, on the calling node.
  """

  alias Binscope.Remote

  # Store binaries are rewritten to keys from 2^62 up (see the collector): their count is the
  # store's, not the VM's.
  @store_key 4_611_686_018_427_387_904

  @doc """
  `%{shared_elsewhere: n, shared_elsewhere_bytes: b, elsewhere_refs: r, seen_binaries: n,
  seen_bytes: b, binary_memory: b, only_elsewhere_bytes: b, elsewhere_share: f}` for `node`.
  `elsewhere_share` = (`shared_elsewhere_bytes` + `only_elsewhere_bytes`) /
  `binary_memory`.
  """
  @spec report(node(), map()) :: {:ok, map()} | {:error, term()}
  def report(node, o) do
    args = [%{detail: :basic, workers: Map.get(o, :workers, :auto)}]

    with {:ok, raw} <- Remote.call(node, :snapshot, args, o.deadline),
         {:ok, mem} <- Remote.call(node, :erlang, [], o.deadline) do
      {:ok, summarize(raw.procs, mem)}
    end
  end

  @doc "The report from collector records and `:erlang.memory(:binary)`."
  @spec summarize([tuple()], non_neg_integer()) :: map()
  def summarize(procs, binary_memory) do
    seen =
      Enum.reduce(procs, %{}, fn r, acc ->
        Enum.reduce(elem(r, 1), acc, fn
          {key, _size, _refc}, acc when key >= @store_key -> acc
          {key, size, refc}, acc -> Map.update(acc, key, {size, refc, 1}, &bump/1)
        end)
      end)

    {n, bytes, refs, seen_bytes} =
      Enum.reduce(seen, {0, 0, 0, 0}, fn {_k, {size, refc, listed}}, {n, b, r, s} ->
        if refc > listed,
          do: {n + 1, b + size, r + refc - listed, s + size},
          else: {n, b, r, s + size}
      end)

    only = max(binary_memory - seen_bytes, 0)

    %{
      shared_elsewhere: n,
      shared_elsewhere_bytes: bytes,
      elsewhere_refs: refs,
      seen_binaries: map_size(seen),
      seen_bytes: seen_bytes,
      binary_memory: binary_memory,
      only_elsewhere_bytes: only,
      elsewhere_share: if(binary_memory > 0, do: (bytes + only) / binary_memory, else: 0.0)
    }
  end

  defp bump({size, refc, listed}), do: {size, refc, listed + 1}
end
