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
  With `read_tables: true` (the default) the collector also reads every table that another
  process may read (public and protected; a private table cannot be read and is listed as
  `:private`) and names the tables that hold each binary (`tables`, `tables_attributed_bytes`:
  see `by_table/2`).

  Cost: one basic scan (`Binscope.processes(detail: :basic)`'s collector cost), one pass over
  every listed reference here, and, with `read_tables:`, a copy of every object of every
  readable table, in chunks of 500 in a worker per table that collects its heap after each
  chunk, up to `max_objects:` (default #{Binscope.Accounting.Options.default_text(:binaries_elsewhere, :max_objects)}) per table (a table cut short is `:partial`).
  That copy is the dangerous part on a production node whose tables hold gigabytes of large
  terms: pass `read_tables: false` there, or a small `max_objects:`.
  """

  alias Binscope.{Collector, Remote}

  require Collector

  # Store binaries are rewritten to keys from 2^62 up (see the collector): their count is the
  # store's, not the VM's.
  @store_key 4_611_686_018_427_387_904

  @doc """
  `%{shared_elsewhere: n, shared_elsewhere_bytes: b, elsewhere_refs: r, seen_binaries: n,
  seen_bytes: b, binary_memory: b, only_elsewhere_bytes: b, elsewhere_share: f}` for `node`.
  `elsewhere_share` = (`shared_elsewhere_bytes` + `only_elsewhere_bytes`) /
  `binary_memory`.
  """
  # `o`: the options of Binscope.binaries_elsewhere/1, validated (every default filled in).
  @spec report(node(), map()) :: {:ok, map()} | {:error, term()}
  def report(node, o) do
    args = [%{detail: :basic, workers: o.workers}]

    with {:ok, raw} <- Remote.call(node, :snapshot, args, o.deadline),
         {:ok, mem} <- Remote.call(node, :erlang, [], o.deadline),
         {:ok, tables} <- read_tables(node, o) do
      summary = summarize(raw.procs, mem)
      {:ok, Map.merge(summary, by_table(tables, raw.procs))}
    end
  end

  defp read_tables(node, o) do
    case o.read_tables do
      false ->
        {:ok, nil}

      true ->
        opts = %{
          budget_ms: Remote.left(o.deadline),
          max_objects: o.max_objects
        }

        Remote.call(node, :ets_binaries, [opts], o.deadline)
    end
  end

  @doc """
  Which ETS tables hold which binaries, from the collector's table reads and the process
  records: `tables` (largest first: `table`, `name`, `status`, `binaries`, `bytes`,
  `bytes_no_process_holds`) and `tables_attributed_bytes` (bytes of binaries only tables hold,
  the part of `only_elsewhere_bytes` found in a table). `nil`s when tables were not read.
  """
  @spec by_table([tuple()] | nil, [tuple()]) :: map()
  def by_table(nil, _procs), do: %{tables: nil, tables_attributed_bytes: nil}

  def by_table(tables, procs) do
    held =
      for r <- procs,
          {key, _size, _refc} <- Collector.basic(r, :binaries),
          into: MapSet.new(),
          do: key

    rows =
      for {t, name, status, bins} <- tables, bins != [] or status != :complete do
        only = for {addr, size} <- bins, not MapSet.member?(held, addr), do: size

        %{
          table: t,
          name: name,
          status: status,
          binaries: length(bins),
          bytes: Enum.reduce(bins, 0, fn {_, size}, acc -> acc + size end),
          bytes_no_process_holds: Enum.sum(only)
        }
      end

    # A binary held by two tables counts once in the attributed total.
    attributed =
      for {_t, _n, _s, bins} <- tables,
          {addr, size} <- bins,
          not MapSet.member?(held, addr),
          into: %{},
          do: {addr, size}

    %{
      tables: Enum.sort_by(rows, &{-&1.bytes, inspect(&1.table)}),
      tables_attributed_bytes: attributed |> Map.values() |> Enum.sum()
    }
  end

  @doc "The report from collector records (`detail: :basic`) and `:erlang.memory(:binary)`."
  @spec summarize([tuple()], non_neg_integer()) :: map()
  def summarize(procs, binary_memory) do
    seen =
      Enum.reduce(procs, %{}, fn r, acc ->
        Enum.reduce(Collector.basic(r, :binaries), acc, fn
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
