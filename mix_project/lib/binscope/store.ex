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

    * `:label` - an atom or a UTF-8 string of at most 255 bytes (default `:default`). Strings are
      never turned into atoms.
    * `:owner` - the local pid the binary is accounted to (default `self()`). Owners are
      monitored: `by_owner/0` and `live/1` say when a binary outlives the process that made it.

  ## Costs

  `put/2` and `intern/2` copy their input once; `alloc/2` with the default zero fill maps fresh
  zeroed pages without touching them. Inputs of 256 KiB and more are handled on
  a dirty CPU scheduler, so no call holds a normal scheduler long (`mix test` checks it with a
  `long_schedule` monitor). `stats/0`, `by_label/0` and `set_capacity/1` are O(1)/O(labels) and
  safe on a busy node; `live/1` and `by_owner/0` walk every live entry on a dirty scheduler.
  """

  import Binscope.Store.Options
  import Bitwise, only: [<<<: 2]

  alias Binscope.Native

  # From this size copies/fills run on a dirty scheduler. Measured on a 2-core machine: copying
  # into fresh pages runs at ~2 GiB/s, so 256 KiB takes ~125 µs on a normal scheduler, well under
  # the 1 ms budget; below it, the hop to a dirty scheduler would cost more than the copy (at
  # 64 KiB a dirty put ran at 0.13-0.29x the speed of :binary.copy, vs 1 MiB at 2.6x).
  @dirty_threshold 256 * 1024

  @typedoc "An accounting label: an atom, or a UTF-8 string of at most 255 bytes."
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

      iex> {:ok, bin} = Binscope.Store.put("hello, native world", label: :doctest)
      iex> bin
      "hello, native world"
  """
  @spec put(binary(), [option()]) :: {:ok, binary()} | {:error, reason()}
  def put(binary, opts \\ []) do
    fun = "Binscope.Store.put/2"
    data = binary!(binary, fun)
    {label, owner} = common_opts!(opts, [], fun)

    if byte_size(data) >= @dirty_threshold,
      do: Native.store_put_dirty(data, label, owner) |> result(fun),
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

    # Zero fills are fresh pages and cost nothing to "fill"; other fills touch every byte.
    if fill != 0 and size >= @dirty_threshold,
      do: Native.store_alloc_dirty(size, fill, label, owner) |> result(fun),
      else: alloc_maybe_dirty(size, fill, label, owner) |> result(fun)
  end

  # A zeroed allocation of many MiB may still fault in jemalloc metadata; keep huge ones dirty too.
  defp alloc_maybe_dirty(size, fill, label, owner) when size >= 16 * @dirty_threshold,
    do: Native.store_alloc_dirty(size, fill, label, owner)

  defp alloc_maybe_dirty(size, fill, label, owner),
    do: Native.store_alloc(size, fill, label, owner)

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
      if byte_size(data) >= @dirty_threshold,
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
  label table (at most 65,536 labels with live binaries at once, plus `:default`, which is never
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
  bookkeeping), `active`, `resident`, `mapped`, `retained` and `metadata`. None of it appears in
  `:erlang.memory/0`.
  """
  @spec allocator() :: %{
          allocated: non_neg_integer(),
          active: non_neg_integer(),
          resident: non_neg_integer(),
          mapped: non_neg_integer(),
          retained: non_neg_integer(),
          metadata: non_neg_integer()
        }
  def allocator do
    case Native.allocator_stats() do
      {:ok, stats} -> stats
      {:error, message} -> raise RuntimeError, "jemalloc statistics unavailable: #{message}"
    end
  end

  @doc false
  def dirty_threshold, do: @dirty_threshold

  defp common_opts!(opts, extra, fun) do
    opts = keyword!(opts, [:label, :owner | extra], fun)
    label = label!(Map.get(opts, :label, :default), fun)
    owner = owner!(Map.get_lazy(opts, :owner, &self/0), fun)
    {label, owner}
  end

  defp result({:ok, _} = ok, _fun), do: ok

  defp result({:error, :dead_owner}, fun),
    do: raise(ArgumentError, "#{fun}: the owner process is not alive")

  defp result({:error, reason}, fun) when reason in [:too_large, :label_too_long],
    do: raise(ArgumentError, "#{fun}: #{reason}")

  defp result({:error, _} = error, _fun), do: error

  defp bang({:ok, bin}), do: bin
  defp bang({:error, reason}), do: raise(Binscope.Error, reason)
end
