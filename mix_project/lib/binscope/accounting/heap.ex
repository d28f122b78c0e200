defmodule Binscope.Accounting.Heap do
  # A whole-node snapshot allocates tens of words per process on the caller's heap (the
  # process_info replies land there, then the records and the result maps) and one binary of
  # packed figures that counts against the virtual binary heap. Grown the usual way, the heap goes
  # through a string of collections that each copy everything live so far, and the binary forces
  # one more. Measured with msacc over 20 basic snapshots of 50k processes: 45 ms of (dirty) GC per
  # snapshot without a reservation, 3.6 ms with one (a plain process_info sweep: 5.8 ms).
  @moduledoc false

  # Never more than this (512 MiB on a 64-bit VM): a reservation asks for its whole heap in one
  # block, while growth the usual way frees garbage on the way. Larger scans grow as usual
  # beyond it. The block is address space until used, but `:erlang.memory/1` counts all of it.
  # A basic snapshot of a million processes needs about 20M words for its records: under a
  # cap of 16M words (128 MiB) their build collected half-way and took 350-574 ms, with the
  # whole room reserved 217-224 ms.
  @max_words 64 * 1024 * 1024

  @doc "The largest reservation, in words."
  @spec max_words() :: pos_integer()
  def max_words, do: @max_words

  @doc """
  Runs `fun` (a zero-arity function) with the calling process's `min_heap_size` raised to
  `words` and its `min_bin_vheap_size` to `vheap_words` (each at most `max_words/0`; only when
  larger than the current minimum and when the process has no `max_heap_size` limit), then puts
  both back. The next collection sizes the heap to those minimums, so `fun` allocates without
  collections; the heap shrinks back at the first collection after.

  The virtual binary heap counts refc binaries a process references: a large binary result (the
  attribution NIF's packed figures) would otherwise trigger a collection of its own.

  OTP 27 and later resize the virtual binary heap at a collection only when the process has
  referenced an off-heap binary since its previous one (measured on OTP 27.3 and 29.1: with
  `min_bin_vheap_size` raised, a collection of a process without one left
  `bin_vheap_block_size` at 46,422 words, and the next large binary forced a collection of its
  own; OTP 25 applies the new minimum at any collection). So a vheap reservation also makes one
  65-byte refc binary, which lets the next collection apply it on every release.
  """
  @spec reserve(non_neg_integer(), non_neg_integer(), (... -> result)) :: result
        when result: term()
  def reserve(words, vheap_words, fun) do
    {:min_heap_size, old} = Process.info(self(), :min_heap_size)
    {:min_bin_vheap_size, old_v} = Process.info(self(), :min_bin_vheap_size)
    words = min(words, @max_words)
    vheap_words = min(vheap_words, @max_words)

    # A heap that is large now can still shrink at the next collection: only the flags count.
    if (words <= old and vheap_words <= old_v) or limited?() do
      fun.()
    else
      Process.flag(:min_heap_size, max(words, old))
      Process.flag(:min_bin_vheap_size, max(vheap_words, old_v))
      # An off-heap binary since the last collection: OTP 27+ resizes the vheap only then.
      marker = if vheap_words > old_v, do: :binary.copy(<<0>>, 65)

      try do
        fun.()
      after
        Process.flag(:min_heap_size, old)
        Process.flag(:min_bin_vheap_size, old_v)
        _ = marker
      end
    end
  end

  # Heap fragments (words) a process may keep after a scan: freeing one costs about 80 ns, and a
  # process frees its fragments at its next collection or, on a normal scheduler, at its exit.
  @fragment_words 128 * 1024

  @doc "The most heap fragment words `release_fragments/0` leaves to the caller."
  @spec fragment_words() :: pos_integer()
  def fragment_words, do: @fragment_words

  @doc """
  Collects the calling process when it holds more than `fragment_words/0` words of heap
  fragments. A local scan's process_info replies arrive in one fragment each and, in its
  reservation, no collection frees them: a caller that exited after a basic snapshot of 50k
  processes freed 50k fragments there, holding its (normal) scheduler 3-6 ms. A collection of a
  heap that large runs on a dirty scheduler and copies only what is live: the result (6-7 ms
  at 50k processes, basic detail).
  """
  @spec release_fragments() :: :ok
  def release_fragments do
    {:garbage_collection_info, info} = Process.info(self(), :garbage_collection_info)
    if Keyword.get(info, :mbuf_size, 0) > @fragment_words, do: :erlang.garbage_collect()
    :ok
  end

  # A process with a max_heap_size must not be pushed towards it by us.
  defp limited? do
    case Process.info(self(), :max_heap_size) do
      {:max_heap_size, %{size: 0}} -> false
      {:max_heap_size, 0} -> false
      _ -> true
    end
  end
end
