defmodule Binscope.AccountingHeapTest do
  use ExUnit.Case, async: true

  alias Binscope.Accounting.Heap

  @words 2_000_000

  defp in_process(opts, fun) do
    {pid, ref} = :erlang.spawn_opt(fn -> exit({:done, fun.()}) end, [:monitor | opts])

    receive do
      {:DOWN, ^ref, :process, ^pid, {:done, result}} -> result
    end
  end

  test "the allocation inside runs without collections; the flag is restored after" do
    {gcs, heap, min_after} =
      in_process([], fn ->
        {:min_heap_size, old} = Process.info(self(), :min_heap_size)

        {gcs, heap} =
          Heap.reserve(@words, 0, fn ->
            {:garbage_collection, g0} = Process.info(self(), :garbage_collection)
            # Room is made at the first collection, then ~1.2M words allocate without one.
            :erlang.garbage_collect()
            {:garbage_collection, g1} = Process.info(self(), :garbage_collection)
            list = Enum.to_list(1..400_000)
            {:garbage_collection, g2} = Process.info(self(), :garbage_collection)
            {:total_heap_size, h} = Process.info(self(), :total_heap_size)
            _ = length(list)
            {{g0[:minor_gcs], g1[:minor_gcs], g2[:minor_gcs]}, h}
          end)

        {:min_heap_size, now} = Process.info(self(), :min_heap_size)
        {gcs, heap, {old, now}}
      end)

    {_, after_gc, after_alloc} = gcs
    assert after_alloc == after_gc, "collections while allocating: #{inspect(gcs)}"
    assert heap >= @words
    {old, now} = min_after
    assert now == old
  end

  test "a large refc binary inside triggers no collection of its own; both flags restored" do
    {gcs, flags_before, flags_after} =
      in_process([], fn ->
        before = Process.info(self(), [:min_heap_size, :min_bin_vheap_size])

        gcs =
          Heap.reserve(@words, @words, fn ->
            :erlang.garbage_collect()
            {:garbage_collection, g0} = Process.info(self(), :garbage_collection)
            # 8 MiB counted on the virtual binary heap (1M words): past the default minimum.
            bin = :binary.copy(<<1>>, 8 * 1_048_576)
            _ = Enum.to_list(1..1_000)
            {:garbage_collection, g1} = Process.info(self(), :garbage_collection)
            _ = byte_size(bin)
            {g0[:minor_gcs], g1[:minor_gcs]}
          end)

        {gcs, before, Process.info(self(), [:min_heap_size, :min_bin_vheap_size])}
      end)

    {g0, g1} = gcs
    assert g1 == g0
    assert flags_after == flags_before
  end

  test "an exception inside still restores the flag" do
    {:min_heap_size, old} = Process.info(self(), :min_heap_size)
    assert_raise RuntimeError, fn -> Heap.reserve(@words, 0, fn -> raise "boom" end) end
    assert {:min_heap_size, ^old} = Process.info(self(), :min_heap_size)
  end

  test "a process with a max_heap_size is left alone; reservations are capped" do
    limited =
      in_process([max_heap_size: %{size: 10_000_000, kill: true}], fn ->
        Heap.reserve(@words, 0, fn -> Process.info(self(), :min_heap_size) end)
      end)

    assert {:min_heap_size, 233} = limited

    capped =
      in_process([], fn ->
        Heap.reserve(Heap.max_words() * 4, 0, fn -> Process.info(self(), :min_heap_size) end)
      end)

    # The VM rounds a minimum up to its next heap size; the cap rounds the same way.
    rounded =
      in_process([min_heap_size: Heap.max_words()], fn -> Process.info(self(), :min_heap_size) end)

    assert capped == rounded
  end
end
