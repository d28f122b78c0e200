defmodule Binscope.Store do
  @moduledoc """
  Refcounted large binaries in native memory, with exact accounting.

  `put/2`, `alloc/2` and `intern/2` return ordinary Elixir binaries: refc binaries whose bytes live
  in the NIF's jemalloc heap, outside every process heap, and are never copied again. Match them,
  slice them, send them, put them in ETS: they behave like any other binary. When the VM has
  garbage-collected the last reference (in every process, ETS table or message queue), the native
  memory is freed and the entry leaves every counter, so `stats/0` is exact at all times.

  Why this matters: the VM reports such binaries at 72 bytes each in `:erlang.process_info(pid,
  :binary)` and barely at all in `:erlang.memory(:binary)`. The store is where their real size is.

  ## Options shared by `put/2`, `alloc/2` and `intern/2`

    * `:label` - an atom or a UTF-8 string of at most `limits().max_label_bytes` bytes (255;
      default `:default`). Strings are
      never turned into atoms.
    * `:owner` - the local pid the binary is accounted to (default `self()`). Owners are
      monitored: `by_owner/0` and `live/1` say when a binary outlives the process that made it.

  ## Costs

  `put/2` and `intern/2` copy their input once; `alloc/2` with the default zero fill maps fresh
  zeroed pages without touching them above 256 KiB (a smaller one is written with zeros, like
  any other fill, often into a reused block). Those large zeroed allocs come from an allocator
  arena of their own: taken from the arenas of puts, a freed block would lose its pages, which
  the next put then faults back in one by one (a ring of 16 MiB puts beside zeroed allocs:
  4.1 ms a put in the shared arenas, 1.2 ms apart). No call holds a normal scheduler long, and
  `mix test` proves it with a `long_schedule` monitor. A put of 256 KiB or more copies in 64 KiB
  steps on the caller's normal scheduler for at most 0.2 ms and, if it is not done by then, goes
  on where it stopped on a dirty CPU scheduler, so which scheduler does the work follows the
  time the copy really takes (a 1 MiB put is usually done within the budget; the hop costs
  6-17 µs, as much as a 256 KiB copy). Allocs and interns of 256 KiB and more run on a dirty CPU
  scheduler from the start: that threshold is chosen by the worst time of a fill or hash and
  copy into fresh pages on a normal scheduler, and sizes just under it are checked too. A put or
  fill still copying or filling when its caller dies stops within 16 MiB and counts nothing. The bookkeeping of a small put
  takes the store's lock once and starts an owner monitor only the first time it sees an owner.
  `stats/0`, `by_label/0` and `set_capacity/1` are O(1)/O(labels) and safe on a busy node;
  `live/1` and `by_owner/0` walk every live entry on a dirty scheduler.

  A binary is released when the VM runs its destructor, which is not in the collection that
  drops its last reference but at that scheduler's next process switch. A process putting in a
  tight loop would keep a whole time slice of its garbage allocated (about 9 MiB of 64 KiB puts
  measured) and copy each new put into memory gone cold. So a small put, alloc or intern ends
  the caller's time slice once 512 KiB were made on its scheduler with no store release in
  between: the caller yields, the garbage is released, and the next puts reuse warm memory.

  Freed payload blocks of 32 to 256 KiB do not go straight back to jemalloc, whose own thread
  cache stops at 32 KiB (every larger block took its slower extent path): they wait in a cache
  per scheduler thread for the next put of their size class there (at most 2 MiB a thread,
  32 MiB in all). `allocator/0` reports what they hold as `payload_cache_bytes`.
  """

  import Binscope.Store.Options
  import Bitwise, only: [<<<: 2]

  alias Binscope.Native

  # Dirty thresholds: from these sizes a call runs on a dirty CPU scheduler; from @dirty_put a put,
  # and from @dirty_alloc an alloc with a non-zero fill, starts on the normal scheduler instead and
  # moves to a dirty one once past its time budget (store.rs, `store_put_large`,
  # `store_alloc_large`). They are the only copy of these sizes (the NIF does not know
  # them), chosen by time, not size alone: a call on a
  # normal scheduler must stay well under 1 ms (the long_schedule budget), also in its worst case,
  # which is not a warm memcpy (21-50 GiB/s here) but a copy or fill into fresh pages: jemalloc
  # hands back pages it purged, so every 4 KiB page faults first. Measured on this project's
  # 2-core machine (`Binscope.Bench.Suite.StoreVm`'s floor rows and
  # test/binscope/store_scheduler_test.exs): fresh-page copy and memset run at ~1.9-2.2 GiB/s,
  # xxh3 at ~5 GiB/s. So:
  #   put    256 KiB: worst copy ~125 us (p99 of 1,000 normal-scheduler calls: 135 us);
  #   alloc  256 KiB, any fill: a zero fill is not free either (jemalloc zeroes reused pages with
  #          memset, in one call that cannot be cut in steps; 2 MiB zero fills held a normal
  #          scheduler > 1 ms in 3 of 1,000 calls, 4 MiB in 29), so it goes to a dirty
  #          scheduler from put's threshold; other fills are written in steps, as puts are;
  #   intern 256 KiB: hash + copy, worst ~175 us (p99 148 us).
  # Below them the hop to a dirty scheduler would cost more than the work (a dirty put of 64 KiB
  # ran at 0.13-0.29x the speed of :binary.copy). A `long_schedule` proof runs sizes just under
  # each threshold (store_scheduler_test.exs).
  @dirty_put 256 * 1024
  @dirty_alloc 256 * 1024
  @dirty_intern 256 * 1024

  @typedoc "An accounting label: an atom, or a UTF-8 string of at most `limits().max_label_bytes` bytes."
  @type label :: atom() | String.t()

  @typedoc "Options of `put/2`, `alloc/2` and `intern/2`."
  @type option :: {:label, label()} | {:owner, pid()}

  @typedoc "Why a request was refused at run time (see `Binscope.Error`)."
  @type reason :: :capacity | :alloc_failed | :label_limit | :cancelled

  @typedoc "Store-wide counters (all byte counts are exact)."
  @type stats :: %{
          live_count: non_neg_integer(),
          live_bytes: non_neg_integer(),
          peak_bytes: non_neg_integer(),
          allocs: non_neg_integer(),
          frees: non_neg_integer(),
          capacity: non_neg_integer() | :infinity,
          memory_limit: non_neg_integer() | :infinity,
          reserved_bytes: non_neg_integer(),
          dedup_hits: non_neg_integer(),
          dedup_saved_bytes: non_neg_integer(),
          label_count: non_neg_integer(),
          owner_count: non_neg_integer()
        }

  @typedoc "One live allocation, as listed by `live/1`."
  @type entry :: %{
          id: pos_integer(),
          size: non_neg_integer(),
          label: label(),
          owner: pid(),
          owner_alive?: boolean(),
          interned?: boolean(),
          age_ms: non_neg_integer()
        }

  @doc """
  Copies `binary` into native memory and returns it as a store-backed binary.

  From 256 KiB the copy starts on the caller's scheduler and moves to a dirty CPU scheduler if it
  takes more than 0.2 ms (see "Costs" above); it stops, counting nothing, if the caller dies.

      iex> {:ok, bin} = Binscope.Store.put("hello, native world", label: :doctest)
      iex> bin
      "hello, native world"
  """
  @spec put(binary(), [option()]) :: {:ok, binary()} | {:error, reason()}
  def put(binary, opts \\ [])

  # The common shapes (no options, or an atom label) skip the option parsing: a small put is a
  # few hundred nanoseconds, and parsing a keyword list into a map was a third of it.
  def put(binary, []) when is_binary(binary) and byte_size(binary) < @dirty_put,
    do: Native.store_put(binary, :default, self()) |> result("Binscope.Store.put/2")

  def put(binary, label: label)
      when is_binary(binary) and is_atom(label) and byte_size(binary) < @dirty_put,
      do: Native.store_put(binary, label, self()) |> result("Binscope.Store.put/2")

  def put(binary, opts) do
    fun = "Binscope.Store.put/2"
    data = binary!(binary, fun)
    {label, owner} = common_opts!(opts, [], fun)

    if byte_size(data) >= @dirty_put,
      do: Native.store_put_large(data, label, owner) |> result(fun),
      else: Native.store_put(data, label, owner) |> result(fun)
  end

  @doc "Like `put/2`, but returns the binary or raises `Binscope.Error`."
  @spec put!(binary(), [option()]) :: binary()
  def put!(binary, opts \\ []), do: bang(put(binary, opts))

  @doc """
  A native binary of `size` bytes, zero-filled or set to `fill: byte`.

  A non-zero fill of many MiB runs on a dirty scheduler in chunks of 16 MiB and stops as soon
  as the calling process is dead (`{:error, :cancelled}`, nothing counted), so a huge fill is
  never a call that cannot be stopped. Sizes the machine cannot back are refused up front (see
  `set_capacity/1`).

      iex> {:ok, bin} = Binscope.Store.alloc(4, fill: ?z)
      iex> bin
      "zzzz"
  """
  @spec alloc(non_neg_integer(), [option() | {:fill, 0..255}]) ::
          {:ok, binary()} | {:error, reason()}
  def alloc(size, opts \\ []) do
    fun = "Binscope.Store.alloc/2"
    size = size!(size, fun)
    {label, owner} = common_opts!(opts, [:fill], fun)
    fill = byte!(Keyword.get(opts, :fill, 0), fun)

    cond do
      size < @dirty_alloc -> Native.store_alloc(size, fill, label, owner)
      fill == 0 -> Native.store_alloc_dirty(size, fill, label, owner)
      true -> Native.store_alloc_large(size, fill, label, owner)
    end
    |> result(fun)
  end

  @doc "Like `alloc/2`, but returns the binary or raises `Binscope.Error`."
  @spec alloc!(non_neg_integer(), [option() | {:fill, 0..255}]) :: binary()
  def alloc!(size, opts \\ []), do: bang(alloc(size, opts))

  @doc """
  Content-addressed storage. Identical content returns a binary backed by the same native
  allocation (a dedup hit allocates nothing, even at capacity); the entry lives while any holder
  does. A hit keeps the label and owner of the first holder. `stats/0` reports `dedup_hits` and
  `dedup_saved_bytes`.

  Costs one hash of the input (xxh3, several GiB/s) plus one copy on a miss.

      iex> {:ok, a} = Binscope.Store.intern("same bytes")
      iex> {:ok, b} = Binscope.Store.intern("same bytes")
      iex> a == b
      true
  """
  @spec intern(binary(), [option()]) :: {:ok, binary()} | {:error, reason()}
  def intern(binary, opts \\ []) do
    fun = "Binscope.Store.intern/2"
    data = binary!(binary, fun)
    {label, owner} = common_opts!(opts, [], fun)

    result =
      if byte_size(data) >= @dirty_intern,
        do: Native.store_intern_dirty(data, label, owner),
        else: Native.store_intern(data, label, owner)

    case result(result, fun) do
      {:ok, {bin, _hit?}} -> {:ok, bin}
      error -> error
    end
  end

  @doc "Like `intern/2`, but returns the binary or raises `Binscope.Error`."
  @spec intern!(binary(), [option()]) :: binary()
  def intern!(binary, opts \\ []), do: bang(intern(binary, opts))

  @doc """
  Store-wide counters: `live_count`, `live_bytes`, `peak_bytes`, `allocs`, `frees` (always
  `live_count == allocs - frees`), `capacity`, `memory_limit` (see `set_capacity/1`),
  `reserved_bytes` (allocations in flight),
  `dedup_hits`, `dedup_saved_bytes`, `label_count` and `owner_count`.

  One lock and a copy of a few integers: safe to call as often as you like.
  """
  @spec stats() :: stats()
  def stats, do: Native.store_stats()

  @doc """
  Live count, bytes and high-water mark per label, for every label with live binaries.

  A label is forgotten when its last binary is released, so per-request labels never fill the
  label table (at most `limits().max_labels` labels with live binaries at once, plus `:default`, which is never
  refused). `peak_bytes` is therefore the label's high-water mark since it last had nothing live:
  a label that is used again after all its binaries were freed starts again from zero.
  """
  @spec by_label() :: %{
          label() => %{
            count: non_neg_integer(),
            bytes: non_neg_integer(),
            peak_bytes: non_neg_integer()
          }
        }
  def by_label, do: Map.new(Native.store_by_label())

  @doc """
  Live count and bytes per owner process, with `alive?: false` for owners that have exited while
  their binaries are still held elsewhere: the first thing to look at when hunting a leak.
  """
  @spec by_owner() :: %{
          pid() => %{count: non_neg_integer(), bytes: non_neg_integer(), alive?: boolean()}
        }
  def by_owner do
    Map.new(Native.store_by_owner(), fn {pid, count, bytes, alive} ->
      {pid, %{count: count, bytes: bytes, alive?: alive}}
    end)
  end

  @doc """
  The live entries, oldest first: the exact leak report for store binaries.

  Options: `label:`, `owner:` (pid), `older_than:` (milliseconds) and `limit:`.

  Ages come from the kernel's coarse monotonic clock, read at each put for its low cost: an
  `age_ms` (and the age `older_than:` compares) may be short of the real age by up to one
  kernel tick (1-4 ms; 4 ms on this project's machines).

  Walks every live entry (on a dirty scheduler): O(live entries).
  """
  @spec live(keyword()) :: [entry()]
  def live(opts \\ []) do
    fun = "Binscope.Store.live/1"
    opts = keyword!(opts, [:label, :owner, :older_than, :limit], fun)
    label = if Map.has_key?(opts, :label), do: {label!(opts.label, fun)}
    owner = if Map.has_key?(opts, :owner), do: owner!(opts.owner, fun)

    older =
      if Map.has_key?(opts, :older_than), do: non_neg_integer!(opts.older_than, :older_than, fun)

    limit = if Map.has_key?(opts, :limit), do: non_neg_integer!(opts.limit, :limit, fun)

    for e <- Native.store_live(label, owner, older, limit) do
      %{
        id: e.id,
        size: e.size,
        label: e.label,
        owner: e.owner,
        owner_alive?: e.owner_alive,
        interned?: e.interned,
        age_ms: e.age_ms
      }
    end
  end

  @doc """
  Sets the hard capacity in bytes, or removes it with `:infinity` (the default). A request that
  would take live plus in-flight bytes over it returns `{:error, :capacity}` and allocates nothing;
  the cap holds exactly under concurrent requests. Lowering it frees nothing that is live.

  Whatever the capacity, the store also refuses (`{:error, :capacity}`) a request that would
  take live plus in-flight bytes over `stats().memory_limit`: the machine's physical memory
  (`MemTotal` of `/proc/meminfo`), or the process's cgroup memory limit (`memory.max`) when
  lower, read once when the NIF loads (`:infinity` where neither can be read). So with the
  default capacity `alloc(1 <<< 40)` is refused on a machine with less than 1 TiB instead of
  being lazily mapped and counted as live. Memory in use outside the store is not subtracted:
  set a capacity for a tighter bound.
  """
  @spec set_capacity(non_neg_integer() | :infinity) :: :ok
  def set_capacity(:infinity), do: Native.store_set_capacity(nil)

  def set_capacity(bytes) when is_integer(bytes) and bytes >= 0 and bytes < 1 <<< 64,
    do: Native.store_set_capacity(bytes)

  def set_capacity(other),
    do:
      raise(
        ArgumentError,
        "Binscope.Store.set_capacity/1: capacity must be :infinity or an integer in " <>
          "0..#{(1 <<< 64) - 1} (bytes), got: #{short(other)}"
      )

  @doc """
  jemalloc's view of the NIF's memory, in bytes: `allocated` (live allocations, store payloads and
  bookkeeping), `active`, `resident`, `mapped`, `retained`, `metadata` and `tcache_bytes` (freed
  bytes the threads' caches keep for reuse, counted in `allocated`), plus `payload_cache_bytes`:
  freed payload blocks of 32 to 256 KiB the store keeps for its next puts (see "Costs" in the
  module docs), also counted in `allocated`. `allocated - tcache_bytes - payload_cache_bytes` is
  what is in use. None of it appears in `:erlang.memory/0`.
  """
  @spec allocator() :: %{
          allocated: non_neg_integer(),
          active: non_neg_integer(),
          resident: non_neg_integer(),
          mapped: non_neg_integer(),
          retained: non_neg_integer(),
          metadata: non_neg_integer(),
          tcache_bytes: non_neg_integer(),
          payload_cache_bytes: non_neg_integer()
        }
  def allocator do
    case Native.allocator_stats() do
      {:ok, stats} -> stats
      {:error, message} -> raise RuntimeError, "jemalloc statistics unavailable: #{message}"
    end
  end

  @doc """
  The store's limits and error reasons, as the native code defines them (this module states
  none of them itself):

    * `max_binary_size` - the largest `put/2`, `alloc/2` or `intern/2` (1 TiB); above it the call
      raises `ArgumentError`;
    * `max_label_bytes` - the longest label, in bytes;
    * `max_labels` - distinct labels with live binaries at once, besides `:default` (more give
      `{:error, :label_limit}`);
    * `copy_first_max` - up to this size a put or alloc makes its buffer before it takes the
      store's lock (so a request the capacity refuses has allocated, and freed, up to this much);
    * `errors` - every reason the native code returns; `caller_errors` - those that are a bad
      argument and raise `ArgumentError` here (`:too_large`, `:label_too_long`, `:dead_owner`); the
      others are `t:reason/0`, returned as `{:error, reason}`.
  """
  @spec limits() :: %{
          max_binary_size: pos_integer(),
          max_label_bytes: pos_integer(),
          max_labels: pos_integer(),
          copy_first_max: pos_integer(),
          errors: [atom()],
          caller_errors: [atom()]
        }
  def limits do
    case :persistent_term.get({__MODULE__, :limits}, nil) do
      nil ->
        limits = Native.store_limits()
        :persistent_term.put({__MODULE__, :limits}, limits)
        limits

      limits ->
        limits
    end
  end

  @doc false
  # The dirty thresholds of put/2, alloc/2 and intern/2 (for the scheduler proof and the bench).
  def dirty_thresholds, do: %{put: @dirty_put, alloc: @dirty_alloc, intern: @dirty_intern}

  defp common_opts!(opts, extra, fun) do
    opts = keyword!(opts, [:label, :owner | extra], fun)
    label = label!(Map.get(opts, :label, :default), fun)
    owner = owner!(Map.get_lazy(opts, :owner, &self/0), fun)
    {label, owner}
  end

  defp result({:ok, _} = ok, _fun), do: ok

  defp result({:error, reason} = error, fun) do
    if reason in limits().caller_errors,
      do: raise(ArgumentError, "#{fun}: #{caller_error(reason)}"),
      else: error
  end

  defp caller_error(:dead_owner), do: "the owner process is not alive"
  defp caller_error(:too_large), do: "too_large (over #{limits().max_binary_size} bytes)"

  defp caller_error(:label_too_long),
    do: "label_too_long (over #{limits().max_label_bytes} bytes)"

  defp caller_error(other), do: Atom.to_string(other)

  defp bang({:ok, bin}), do: bin
  defp bang({:error, reason}), do: raise(Binscope.Error, reason)
end
