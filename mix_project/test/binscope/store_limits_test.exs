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
    before = Store.stats()
    size = 2 * @gib
    assert size < before.memory_limit

    {pid, ref} = spawn_monitor(fn -> Store.alloc(size, fill: 7) end)
    # Inside the fill (which takes about a second for 2 GiB of fresh pages here).
    assert eventually(fn -> Store.stats().reserved_bytes == size end, 5_000)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, :process, ^pid, :killed}

    # The fill stops within a chunk (16 MiB) instead of running to its end and committing.
    assert eventually(fn -> Store.stats().reserved_bytes == 0 end, 2_000)
    s = Store.stats()
    assert {s.allocs, s.live_bytes} == {before.allocs, before.live_bytes}
  end

  test "a long put stops when its caller dies, counting nothing" do
    size = 1 * @gib
    input = :binary.copy("p", size)
    before = Store.stats()
    assert 2 * size < before.memory_limit

    {pid, ref} = spawn_monitor(fn -> Store.put(input) end)
    # Inside the copy (its dirty part: the normal one ends after 0.2 ms), which takes a few
    # hundred ms for 1 GiB of fresh pages here.
    assert eventually(fn -> Store.stats().reserved_bytes == size end, 5_000)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, :process, ^pid, :killed}

    # The copy stops within 16 MiB instead of running to its end and committing.
    assert eventually(fn -> Store.stats().reserved_bytes == 0 end, 2_000)
    s = Store.stats()
    assert {s.allocs, s.live_bytes} == {before.allocs, before.live_bytes}
  end
end
