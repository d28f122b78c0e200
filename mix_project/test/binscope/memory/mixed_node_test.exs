defmodule Binscope.Memory.MixedNodeTest do
  # A child VM does the work; this suite's own memory does not count.
  use ExUnit.Case, async: true

  @moduletag timeout: 180_000

  test "the mixed node of issue 14: RSS explained to within 5 %, binary_alloc diagnosed" do
    {:ok, m} = Binscope.MemoryScenario.run()

    assert is_integer(m.rss) and m.rss > 200 * 1_048_576
    assert abs(m.unaccounted_share) < 0.05, inspect(Map.drop(m, [:allocators, :fragmentation]))
    # The figures add up to the kernel's RSS.
    assert m.rss == m.rss_file + m.rss_shmem + m.native_resident + m.vm_resident + m.unaccounted
    # The store buffer is resident and counted as native memory.
    assert m.native_resident >= 64 * 1_048_576
    # Before issue 14, `unaccounted` left fragmentation and code out (23-25 % of RSS measured).
    assert abs(m.old_unaccounted / m.rss) > 0.05

    [frag | _] = m.fragmentation
    assert frag.allocator == :binary_alloc
    assert frag.free > 100 * 1_048_576 and frag.usage < 0.25
    [top | _] = m.allocators
    assert top.allocator == :binary_alloc
  end
end
