defmodule Binscope.Accounting.Heap do
  # A whole-node snapshot allocates tens of words per process on the caller's heap (the
  # process_info results, the records, the result maps). Grown the usual way, the heap goes
  # through a string of collections that copy everything live so far each time: measured with
  # msacc at 50k processes, 45 ms of (dirty) GC per basic snapshot against 7 ms for a plain
  # process_info sweep. Reserving the room up front makes it one heap allocation instead.
  @moduledoc false

  # Never more than this (128 MiB on a 64-bit VM): a reservation asks for its whole heap in one
  # block, while growth the usual way frees garbage on the way. Larger scans grow as usual
  # beyond it.
  @max_words 16 * 1024 * 1024

  @doc "The largest reservation, in words."
  @spec max_words() :: pos_integer()
  def max_words, do: @max_words

  @doc """
  Runs `fun` with the calling process's `min_heap_size` raised to `words` (at most
  `max_words/0`; only when that is larger than its heap and it has no `max_heap_size` limit),
  then puts the flag back. The next collection sizes the heap to that minimum, so `fun`
  allocates without collections; the heap shrinks back at the first collection after.
  """
  @spec reserve(non_neg_integer(), (() -> result)) :: result when result: term()
  def reserve(words, fun) do
    words = min(words, @max_words)
    {:min_heap_size, old} = Process.info(self(), :min_heap_size)
    {:total_heap_size, now} = Process.info(self(), :total_heap_size)

    if words <= max(old, now) or limited?() do
      fun.()
    else
      Process.flag(:min_heap_size, words)

      try do
        fun.()
      after
        Process.flag(:min_heap_size, old)
      end
    end
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
