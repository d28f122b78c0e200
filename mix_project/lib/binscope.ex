defmodule Binscope do
  @moduledoc """
  Where a node's memory is, who holds its binaries, and which processes leak them.

  Every function runs on the local node by default; `node: n` runs it on another node, and
  `nodes: [n1, n2] | :connected` on many at once, returning `%{node => {:ok, _} | {:error, _}}`.
  Remote targets need no Binscope installed (see `Binscope.Remote`).

  Every call is bounded by `timeout:` (ms, default #{Binscope.Accounting.Options.default_text(:memory, :timeout)}), locally as on `node:` and `nodes:`:
  it returns by then plus a small margin (`Binscope.Remote.margin_ms/0`, 100 ms; measured in
  the README, Reliability), with `{:error, :timeout}` (per node with `nodes:`) when the work did
  not finish. A timed-out call leaves nothing behind: no scan or GC process, no message, the
  caller's heap reservation put back. A leak scan that times out has forced the collections it
  got through, no more.

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
  Where the node's memory is, in bytes, and why RSS is what it is.

  Keys: every `:erlang.memory/0` category (`total`, `processes`, `binary`, `ets`, ...),
  `store_live_bytes`, `native_allocated` and `native_resident` (jemalloc, Binscope's NIF),
  `node` and `binscope_loaded` (whether the target has Binscope's NIF), and the
  reconciliation of RSS with every allocator (`Binscope.Memory.Breakdown` says what each
  figure is and how it is read):

  - `rss` = `rss_file` + `rss_shmem` + `native_resident` + `vm_resident` + `unaccounted`,
    `unaccounted_share` (of `rss`); `rss_anon`, `swap`, `threads` (kernel, `/proc/self/status`);
  - `vm_mapped`, `vm_mmap`, `vm_literal_mmap`, `vm_malloc_carriers`, `vm_carriers`, `vm_blocks`,
    `vm_carrier_free`, `vm_unused_resident`, `vm_mseg_cache` (the VM's allocators);
  - `allocators`: one map per allocator type (carrier and block bytes, mbcs/pool/sbcs, usage),
    most free first; `fragmentation`: the allocators holding mostly-empty carriers, with the
    emulator flags that address it and their documented effect.

  A figure the target cannot give (no `/proc`, an emulator without the allocator figures) is
  `:unavailable`, never 0.

  Cost: reads counters only, no process or table is scanned: `:erlang.memory/0`, jemalloc's
  statistics, `/proc/self/status`, and `:erlang.system_info({:allocator, a})` for each of the
  ~10 allocator types (about 0.4-3 ms of wall time measured, most of it waiting while every
  scheduler reports its own allocator instances; the caller is suspended meanwhile, its
  scheduler is not held). Every such read, like recon_alloc's, starts a new "max since last
  call" period of that allocator's figures (the middle value of its tuples; "max ever" is
  unaffected): a tool that watches those figures sees the period Binscope's read began.

  #{Options.doc(:memory)}

      iex> {:ok, m} = Binscope.memory()
      iex> m.total > 0 and is_integer(m.store_live_bytes)
      true
  """
  @spec memory(keyword()) :: {:ok, map()} | {:ok, per_node(map())} | {:error, term()}
  def memory(opts \\ []) do
    o = Options.validate!(:memory, opts)
    on_target(o, &Accounting.node_memory(&2, &1.deadline))
  end

  @doc "Like `memory/1`, raising `Binscope.Error` on failure."
  @spec memory!(keyword()) :: map()
  def memory!(opts \\ []), do: bang(memory(opts))

  @doc """
  The largest ETS tables by memory, largest first: `table`, `name`, `owner` (pid),
  `owner_name`, `type`, `size` (objects) and `memory` (bytes of the table itself; refc
  binaries it holds live in binary_alloc and count in `:erlang.memory(:binary)`).

  Cost: one `:ets.info/2` counter read per table, then a few for each listed table; no table
  is scanned.

  #{Options.doc(:ets_tables)}

      iex> {:ok, tables} = Binscope.ets_tables(limit: 3)
      iex> length(tables) <= 3
      true
  """
  @spec ets_tables(keyword()) :: {:ok, [map()]} | {:ok, per_node([map()])} | {:error, term()}
  def ets_tables(opts \\ []) do
    o = Options.validate!(:ets_tables, opts)
    on_target(o, &Binscope.Memory.Ets.top(&2, o.limit, &1.deadline))
  end

  @doc "Like `ets_tables/1`, raising `Binscope.Error` on failure."
  @spec ets_tables!(keyword()) :: [map()]
  def ets_tables!(opts \\ []), do: bang(ets_tables(opts))

  @doc """
  One record per process, sizes in bytes:

  - `pid`, `node`, `registered_name` (`nil` when it has none), `label` (set with `proc_lib:set_label/1`, OTP 27+; `nil`
    when unset or on an older OTP), `initial_call` (proc_lib's real one), `current_function`;
  - `memory`, `heap_size`, `total_heap_size`, `stack_size`, `old_heap_size`, `message_queue_len`,
    `reductions`;
  - `binary_refs`, `binary_bytes`: the naive sum of `process_info(pid, :binary)`, as other tools
    report it (shared binaries counted once per holder, store binaries at 72 bytes);
  - `binary_uss`: bytes of binaries only this process references;
  - `binary_pss`: its fair share of each binary it holds (summed over the node, every binary
    counts once); `binary_distinct`, `binary_shared`;
  - `native_bytes` = `native_store_bytes` (exact, Binscope.Store binaries) +
    `native_estimated_bytes` (other NIF binaries, estimated from the virtual binary heap).
    On OTP 27 and later `native_estimated_bytes` and so `native_bytes` are `nil` (unknown; rank
    by `native_store_bytes` there): the VM charges another NIF's resource binary only the ~72
    bytes of its magic binary (OTP issue 11611), so the virtual binary heap no longer reveals
    its size;
  - `unresolved_store_binaries`: references that may be store binaries but could not be
    identified exactly, because their store entry was released, or its address reused by a
    newer entry, while the scan ran. They are in no byte figure (never credited at another
    entry's size); usually 0 on a quiet node, a few under heavy store churn;
  - `minor_gcs`, `fullsweep_after`, `bin_vheap_size`, `bin_old_vheap_size`.

  #{Options.doc(:processes)}
  Scans every process (one `process_info/2` call each); forces no GC. Processes that exit
  during the scan are skipped.

  `workers:` splits the scan among that many processes (`:auto`: one per online
  scheduler of the target but one, so 1 on a 2-scheduler node; a split needs at least 4,000
  processes per worker). `process_info/2` of another process is a round trip, so a split scan
  ends sooner, but it competes for more schedulers: with every scheduler scanning, measured on
  2 cores, the OS preempted scanners mid-slice (2-5 ms `long_schedule` reports), which is why
  `:auto` leaves one free. See README, Performance.

  `detail: :basic` collects only memory and the binary list (everything attribution needs, the
  same two `process_info/2` items as a plain `process_info(pid, [:binary, :memory])` sweep, plus
  `:label` on OTP 27+), registered names (from one `Process.registered/0`) and labels. Its
  records hold those fields only: `pid`, `node`, `registered_name`, `label`, `memory`,
  `binary_refs`, `binary_bytes`, `binary_distinct`, `binary_uss`, `binary_pss`,
  `binary_shared`, `native_store_bytes` and `unresolved_store_binaries`
  (`Binscope.Accounting.basic_fields/0`): 144 bytes a process with its list cell (a local
  process without name or label), where a record of every field took 256. The others (`initial_call`,
  `current_function`, the heap, stack, queue, reduction and GC figures, `native_bytes` and
  `native_estimated_bytes`, which need the virtual binary heap) are in `:full` records only;
  read them with `Map.get/2` or `record[:field]` where a record may be either. `:full`, the
  default, costs about 2-3x more: its GC items cost the most (see README, Performance).

      iex> {:ok, procs} = Binscope.processes()
      iex> Enum.any?(procs, &(&1.pid == self()))
      true
  """
  @spec processes(keyword()) :: {:ok, [map()]} | {:ok, per_node([map()])} | {:error, term()}
  def processes(opts \\ []) do
    o = Options.validate!(:processes, opts)
    on_target(o, &with({:ok, s} <- Accounting.snapshot(&2, &1), do: {:ok, s.processes}))
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

  #{Options.doc(:snapshot)}
  """
  @spec snapshot(keyword()) :: {:ok, map()} | {:ok, per_node(map())} | {:error, term()}
  def snapshot(opts \\ []) do
    o = Options.validate!(:snapshot, opts)
    on_target(o, &Accounting.snapshot(&2, &1))
  end

  @doc "Like `snapshot/1`, raising `Binscope.Error` on failure."
  @spec snapshot!(keyword()) :: map() | per_node(map())
  def snapshot!(opts \\ []), do: bang(snapshot(opts))

  @doc """
  The `n` processes with the largest `by:` metric; any numeric field of
  `processes/1` works (with `detail: :basic`, one of the fields it collects). It scans as
  `processes/1` does, but the ranking runs in Rust over the whole node's figures and records
  are made for the first few only (`native_bytes` and `native_estimated_bytes` excepted: every
  record is made and ranked), so at a million processes it builds a few maps, not a million.
  Equal figures rank the larger pid first; an unknown (`nil`) figure ranks last.
  The scan's own process is left out (as is any process running Binscope's
  collector when it was read: a remote scan's, another scan), with or without `window:`; the
  caller, waiting for the scan, is not.

  `window: ms` ranks by growth instead: two snapshots `ms` apart, processes ordered by how much
  `by:` grew between them (as recon's `proc_window`), each record with `growth`,
  `growth_from` (`nil` for a process born in the window) and `window_ms`; twice the cost of
  `processes/1`, plus the wait. See `Binscope.Memory.Growth`.

  #{Options.doc(:top)}
      iex> {:ok, [_, _, _]} = Binscope.top(3, by: :binary_pss)
  """
  @spec top(pos_integer(), keyword()) ::
          {:ok, [map()]} | {:ok, per_node([map()])} | {:error, term()}
  def top(n, opts \\ [])

  def top(n, opts) when is_integer(n) and n > 0 do
    o = Options.validate!(:top, opts)
    # With window:, the call waits that long between its two snapshots: its bound is the
    # timeout plus the window.
    o = if o[:window], do: %{o | timeout: o.timeout + o.window}, else: o

    on_target(o, fn o, node ->
      if Map.has_key?(o, :window) do
        Binscope.Scanner.run(fn -> Binscope.Memory.Growth.top(node, n, o) end)
      else
        Binscope.Scanner.run(fn -> Accounting.top_processes(node, n, o, self()) end)
      end
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
  Memory rolled up by `by:` (`:application`: each process's group leader, as
  `:application.get_application/1` decides; `:registered_name`; `:initial_call`; `:label`, the
  `proc_lib:set_label/1` label of OTP 27+): one map per group, largest first, with `group`,
  `processes`, `memory`, `binary_pss` (each binary counted once over the node),
  `native_store_bytes` and `total` (their sum). "Which application holds the
  memory" is `Binscope.rollup()`.

  Cost: one snapshot (basic detail, or full for `:initial_call`), plus one `process_info/2` per
  process for `:application`.

  #{Options.doc(:rollup)}

      iex> {:ok, groups} = Binscope.rollup()
      iex> Enum.any?(groups, &(&1.group == :kernel))
      true
  """
  @spec rollup(keyword()) :: {:ok, [map()]} | {:ok, per_node([map()])} | {:error, term()}
  def rollup(opts \\ []) do
    o = Options.validate!(:rollup, opts)
    on_target(o, &Binscope.Memory.Rollup.by(&2, o.by, &1))
  end

  @doc "Like `rollup/1`, raising `Binscope.Error` on failure."
  @spec rollup!(keyword()) :: [map()]
  def rollup!(opts \\ []), do: bang(rollup(opts))

  @doc """
  Refc binaries held outside processes (ETS tables, `persistent_term`, ports, NIFs): how many
  binaries processes share with such holders and their bytes (exact: a reference count above
  the listed holders), the bytes no process references at all (an estimate from
  `:erlang.memory(:binary)`), and `elsewhere_share` of the binary memory. See
  `Binscope.Memory.External` for each figure and its cost (one basic scan, plus a chunked copy
  of every readable ETS table to name the tables that hold binaries: `tables`).

  #{Options.doc(:binaries_elsewhere)}
  """
  @spec binaries_elsewhere(keyword()) :: {:ok, map()} | {:ok, per_node(map())} | {:error, term()}
  def binaries_elsewhere(opts \\ []) do
    o = Options.validate!(:binaries_elsewhere, opts)

    on_target(o, &Binscope.Memory.External.report(&2, &1))
  end

  @doc "Like `binaries_elsewhere/1`, raising `Binscope.Error` on failure."
  @spec binaries_elsewhere!(keyword()) :: map() | per_node(map())
  def binaries_elsewhere!(opts \\ []), do: bang(binaries_elsewhere(opts))

  @doc """
  Processes holding binaries that only a GC would free, largest `reclaimed_bytes` first. See
  `Binscope.Leaks` for the modes and their costs.

  #{Options.doc(:leaks)}

  Results come most waste first. Each result: `pid` and identity, `waste_bytes` =
  `reclaimed_bytes` + `pinned_bytes`, `reclaimed_bytes` (exact, each binary once, store binaries
  included), `pinned_bytes` (an estimate: binary bytes it keeps after a full GC beyond its own
  heap, when they are at least 1 MiB and 16 times the heap: likely large parents kept alive by
  small slices; such a process ranks first with `:binary_copy` even after it was collected),
  `off_heap_queue` (its queue is kept off the heap: binaries queued there are in none of these
  figures), `reclaimed_refs`, `reclaimed_binaries`, `retained_binary_bytes`, `estimated_bytes`
  (bytes only it references), `likely_garbage_bytes` (what the ranking expected; `nil` in
  `:full` mode), `unresolved_store_binaries` (listed before the GC but not identifiable, as in
  `processes/1`: in no figure),
  `suggestion` (`:hibernate_after`, `:hibernate_idle`, `:fullsweep_after`, `:binary_copy`,
  `:off_heap_queue` or `:none`) and `reason`, in the process's own figures. OTP's own processes
  (`code_server`, `user`, ...) get `:none`, a process blocked in a passive receive no hibernation
  advice, and Binscope's own processes are left out. The targeted mode forces no GC on a process
  without likely garbage.

  **Forces garbage collections** (except with `mode: :dry_run`).
  """
  @spec leaks(keyword()) :: {:ok, [map()]} | {:ok, per_node([map()])} | {:error, term()}
  def leaks(opts \\ []) do
    o = Options.validate!(:leaks, opts)

    # In a process of its own (see Binscope.Scanner): the caller's heap never holds the scan.
    on_target(o, fn o, node -> Binscope.Scanner.run(fn -> Binscope.Leaks.find(node, o) end) end)
  end

  @doc "Like `leaks/1`, raising `Binscope.Error` on failure."
  @spec leaks!(keyword()) :: [map()]
  def leaks!(opts \\ []), do: bang(leaks(opts))

  @doc """
  Prints a result of `memory/1`, `top/2`, `processes/1`, `snapshot/1` or `leaks/1` (as returned:
  `{:ok, _}`, `{:error, _}`, a bare value, or per-node results) as the command line's table, in
  IEx or a remote shell, where a release has no mix tasks. See `Binscope.Printer`.

      Binscope.top(5) |> Binscope.print()
  """
  @spec print(term(), keyword()) :: :ok
  def print(result, opts \\ []), do: Binscope.Printer.print(result, opts)

  # One deadline for the whole call, taken before anything else runs.
  defp on_target(%{nodes: nodes} = o, fun) do
    deadline = Binscope.Remote.deadline(o.timeout)
    o = Map.put(o, :deadline, deadline)
    nodes = if nodes == :connected, do: [node() | Node.list([:visible, :hidden])], else: nodes
    {:ok, Binscope.Remote.each(nodes, deadline, &fun.(o, &1))}
  end

  defp on_target(o, fun) do
    o = Map.put(o, :deadline, Binscope.Remote.deadline(o.timeout))
    Binscope.Remote.bounded(fn -> fun.(o, Map.get(o, :node, node())) end)
  end

  defp bang({:ok, v}), do: v
  defp bang({:error, reason}), do: raise(Binscope.Error, reason)
end
