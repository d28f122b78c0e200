defmodule Binscope.StoreLimitsTest do
  # Issue 12, item 5: with the default capacity (:infinity), alloc(1 TiB) with a zero fill
  # returned {:ok, _} on a 24 GiB machine (lazily mapped, live_bytes = 1 TiB), and
  # alloc(64 GiB, fill: 7) had not returned after 55 s. Requests the machine (or cgroup) cannot
  # back are now refused up front, and long fills stop when their caller dies.
  use Binscope.StoreCase, async: false

  import Bitwise

  @gib 1 <<< 30

  defp meminfo_total do
    {:ok, text} = File.read("/proc/meminfo")
    [_, kb] = Regex.run(~r/MemTotal:\s+(\d+) kB/, text)
    String.to_integer(kb) * 1024
  end

  test "the memory limit is the machine's memory, or the cgroup's limit when lower" do
    limit = Store.stats().memory_limit
    assert is_integer(limit) and limit > 0
    assert limit <= meminfo_total()
    assert Store.stats().capacity == :infinity
  end

  test "with the default capacity, a request the machine cannot back is refused at once" do
    before = Store.stats()
    assert before.memory_limit < 1 <<< 40, "this test needs a machine with less than 1 TiB"

    assert {:error, :capacity} = Store.alloc(1 <<< 40)
    assert {:error, :capacity} = Store.alloc(before.memory_limit + 1)
    assert_raise Binscope.Error, ~r/capacity/, fn -> Store.alloc!(1 <<< 40) end

    {us, result} = :timer.tc(fn -> Store.alloc(64 * @gib, fill: 7) end)
    assert result == {:error, :capacity}
    assert us < 1_000_000, "refused in #{us} µs"
    assert Store.stats() == before
  end

  test "a long fill stops when its caller dies, counting nothing" do
    # The fill takes about a second for 2 GiB of fresh pages here, and stops within a chunk
    # (16 MiB) instead of running to its end and committing.
    assert 2 * @gib < Store.stats().memory_limit
    assert_stops_when_caller_dies(2 * @gib, fn size -> Store.alloc(size, fill: 7) end)
  end

  test "a long put stops when its caller dies, counting nothing" do
    # The copy (its dirty part: the normal one ends after 0.2 ms) takes a few hundred ms for
    # 1 GiB of fresh pages here, and stops within 16 MiB.
    input = :binary.copy("p", 1 * @gib)
    assert 2 * byte_size(input) < Store.stats().memory_limit
    assert_stops_when_caller_dies(byte_size(input), fn _ -> Store.put(input) end)
  end

  # Starts `call.(size)` in a process, kills it once the store reserved `size` bytes (so inside
  # the work) and asserts the reservation goes and nothing was counted.
  defp assert_stops_when_caller_dies(size, call) do
    before = Store.stats()
    {pid, ref} = spawn_monitor(fn -> call.(size) end)
    assert eventually(fn -> Store.stats().reserved_bytes == size end, 5_000)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, :process, ^pid, :killed}

    assert eventually(fn -> Store.stats().reserved_bytes == 0 end, 2_000)
    s = Store.stats()
    assert {s.allocs, s.live_bytes} == {before.allocs, before.live_bytes}
  end
end
