defmodule Binscope do
  @moduledoc """
  Where a node's memory is, who holds its binaries, and which processes leak them.

  Every function runs on the local node by default; `node: n` runs it on another node, and
  `nodes: [n1, n2] | :connected` on many at once, returning `%{node => {:ok, _} | {:error, _}}`.
  Remote targets need no Binscope installed (see `Binscope.Remote`); every remote call is bounded
  by `timeout:` (ms, default 30_000).

  | function | scans every process | forces GC | safe on a busy production node |
  |---|---|---|---|
  | `memory/1` | no | no | yes |
  | `processes/1`, `top/2` | yes (one `process_info/2` each) | no | yes |
  | `leaks/1` (`:targeted`, default) | yes | top `candidates` only | yes |
  | `leaks(mode: :dry_run)` | yes | no | yes |
  | `leaks(mode: :full)` | yes | **every process** | no: every process pauses for its GC |

  Store binaries (`Binscope.Store`) count at their real size everywhere here, although the VM
  lists each at 72 bytes.
  """

  alias Binscope.Accounting
  alias Binscope.Accounting.Options

  @typedoc "Per-node results when `nodes:` is given."
  @type per_node(t) :: %{node() => {:ok, t} | {:error, term()}}

  @doc """
  Where the node's memory is, in bytes.

  Keys: every `:erlang.memory/0` category (`total`, `processes`, `binary`, `ets`, ...),
  `store_live_bytes`, `native_allocated` and `native_resident` (jemalloc, Binscope's NIF),
  `rss` (from `/proc`, or `:unavailable`), `unaccounted` (RSS minus the VM's total and the
  NIF's resident bytes), `node` and `binscope_loaded` (whether the target has Binscope's NIF).

  Cheap: reads counters only.

      iex> {:ok, m} = Binscope.memory()
      iex> m.total > 0 and is_integer(m.store_live_bytes)
      true
  """
  @spec memory(keyword()) :: {:ok, map()} | {:ok, per_node(map())} | {:error, term()}
  def memory(opts \\ []) do
    o = Options.validate!(opts, [], "Binscope.memory/1")
    on_target(o, &Accounting.node_memory(&1, o.timeout))
  end

  @doc "Like `memory/1`, raising `Binscope.Error` on failure."
  @spec memory!(keyword()) :: map()
  def memory!(opts \\ []), do: bang(memory(opts))

  @doc """
  One record per process, sizes in bytes:

  - `pid`, `node`, `registered_name`, `initial_call` (proc_lib's real one), `current_function`;
  - `memory`, `heap_size`, `total_heap_size`, `stack_size`, `old_heap_size`, `message_queue_len`,
    `reductions`;
  - `binary_refs`, `binary_bytes`: the naive sum of `process_info(pid, :binary)`, as other tools
    report it (shared binaries counted once per holder, store binaries at 72 bytes);
  - `binary_uss`: bytes of binaries only this process references;
  - `binary_pss`: its fair share of each binary it holds (summed over the node, every binary
    counts once); `binary_distinct`, `binary_shared`;
  - `native_bytes` = `native_store_bytes` (exact, Binscope.Store binaries) +
    `native_estimated_bytes` (other NIF binaries, estimated from the virtual binary heap);
  - `unresolved_store_binaries`: references that may be store binaries but could not be
    identified exactly, because their store entry was released, or its address reused by a
    newer entry, while the scan ran. They are in no byte figure (never credited at another
    entry's size); usually 0 on a quiet node, a few under heavy store churn;
  - `minor_gcs`, `fullsweep_after`, `bin_vheap_size`, `bin_old_vheap_size`.

  Options: `pids:` (only these), `detail:` (`:full`, the default, or `:basic`), `workers:`,
  plus `node:`/`nodes:`/`timeout:`. Scans every process (one `process_info/2` call each); forces
  no GC. Processes that exit during the scan are skipped.

  `workers:` splits the scan among that many processes (`:auto`, the default: one per online
  scheduler of the target but one, so 1 on a 2-scheduler node; a split needs at least 4,000
  processes per worker). `process_info/2` of another process is a round trip, so a split scan
  ends sooner, but it competes for more schedulers: with every scheduler scanning, measured on
  2 cores, the OS preempted scanners mid-slice (2-5 ms `long_schedule` reports), which is why
  `:auto` leaves one free. See README, Performance.

  `detail: :basic` collects only memory and the binary list (everything attribution needs, the
  same two `process_info/2` items as a plain `process_info(pid, [:binary, :memory])` sweep) and
  registered names (from one `Process.registered/0`); the other fields are `nil`. `:full`, the
  default, costs about 2-3x more: its GC items cost the most (see README, Performance).

      iex> {:ok, procs} = Binscope.processes()
      iex> Enum.any?(procs, &(&1.pid == self()))
      true
  """
  @spec processes(keyword()) :: {:ok, [map()]} | {:ok, per_node([map()])} | {:error, term()}
  def processes(opts \\ []) do
    o = Options.validate!(opts, [:pids, :detail, :workers], "Binscope.processes/1")
    on_target(o, &with({:ok, s} <- Accounting.snapshot(&1, o), do: {:ok, s.processes}))
  end

  @doc "Like `processes/1`, raising `Binscope.Error` on failure."
  @spec processes!(keyword()) :: [map()]
  def processes!(opts \\ []), do: bang(processes(opts))

  @doc """
  The whole snapshot: `processes` (as `processes/1`), a node `summary` (`naive_bytes`, against
  `unique_bytes` where each binary counts once; `shared_binaries`, `shared_bytes`,
  `external_binaries` held by ETS/ports/NIFs too, `store_bytes`, `unresolved_store_binaries`
  summed over the processes), the `top_shared` binaries
  and the number of `workers` the scan used.
  Options as `processes/1`, plus `top_shared:` (default 10).
  """
  @spec snapshot(keyword()) :: {:ok, map()} | {:ok, per_node(map())} | {:error, term()}
  def snapshot(opts \\ []) do
    o = Options.validate!(opts, [:pids, :top_shared, :detail, :workers], "Binscope.snapshot/1")
    on_target(o, &Accounting.snapshot(&1, o))
  end

  @doc """
  The `n` processes with the largest `by:` metric (default `:memory`); any numeric field of
  `processes/1` works (with `detail: :basic`, one of the fields it collects). Same cost as
  `processes/1`.

      iex> {:ok, [_, _, _]} = Binscope.top(3, by: :binary_pss)
  """
  @spec top(pos_integer(), keyword()) ::
          {:ok, [map()]} | {:ok, per_node([map()])} | {:error, term()}
  def top(n, opts \\ [])

  def top(n, opts) when is_integer(n) and n > 0 do
    o = Options.validate!(opts, [:by, :detail, :workers], "Binscope.top/2")
    by = Map.get(o, :by, :memory)

    on_target(o, fn node ->
      with {:ok, s} <- Accounting.snapshot(node, o), do: {:ok, Accounting.top(s.processes, n, by)}
    end)
  end

  def top(n, _opts) do
    raise ArgumentError,
          "Binscope.top/2: n must be a positive integer, got: #{inspect(n, limit: 8)}"
  end

  @doc "Like `top/2`, raising `Binscope.Error` on failure."
  @spec top!(pos_integer(), keyword()) :: [map()]
  def top!(n, opts \\ []), do: bang(top(n, opts))

  @doc """
  Processes holding binaries that only a GC would free, largest `reclaimed_bytes` first. See
  `Binscope.Leaks` for the modes and their costs.

  Options: `mode:` (`:targeted` default, `:full`, `:dry_run`), `limit:` (results, default 10),
  `candidates:` (processes collected in `:targeted` mode, default 20), `idle_ms:` (how long
  the shortlist is watched for activity, default 50), `workers:` (as `processes/1`),
  `node:`/`nodes:`/`timeout:`.

  Each result: `pid` and identity, `reclaimed_bytes` (exact, each binary once, store binaries
  included), `reclaimed_refs`, `reclaimed_binaries`, `retained_binary_bytes`, `estimated_bytes`
  (bytes only it references), `likely_garbage_bytes` (what the ranking expected; `nil` in
  `:full` mode), `unresolved_store_binaries` (listed before the GC but not identifiable, as in
  `processes/1`: in no figure), `suggestion` (`:hibernate_after`, `:hibernate_idle`, `:fullsweep_after`, `:binary_copy`,
  `:off_heap_queue` or `:none`) and `reason`, in the process's own figures.

  **Forces garbage collections** (except with `mode: :dry_run`).
  """
  @spec leaks(keyword()) :: {:ok, [map()]} | {:ok, per_node([map()])} | {:error, term()}
  def leaks(opts \\ []) do
    o =
      Options.validate!(
        opts,
        [:mode, :limit, :candidates, :idle_ms, :workers],
        "Binscope.leaks/1"
      )

    on_target(o, &Binscope.Leaks.find(&1, o))
  end

  @doc "Like `leaks/1`, raising `Binscope.Error` on failure."
  @spec leaks!(keyword()) :: [map()]
  def leaks!(opts \\ []), do: bang(leaks(opts))

  defp on_target(%{nodes: nodes} = o, fun) do
    nodes = if nodes == :connected, do: [node() | Node.list([:visible, :hidden])], else: nodes
    {:ok, Binscope.Remote.each(nodes, o.timeout, fun)}
  end

  defp on_target(o, fun), do: fun.(Map.get(o, :node, node()))

  defp bang({:ok, v}), do: v
  defp bang({:error, reason}), do: raise(Binscope.Error, reason)
end
