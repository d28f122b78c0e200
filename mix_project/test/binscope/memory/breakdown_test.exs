defmodule Binscope.Memory.BreakdownTest do
  use ExUnit.Case, async: true

  alias Binscope.Memory.Breakdown

  @mib 1_048_576

  # A collector result with the given kernel and allocator figures.
  defp raw(anon, carriers, blocks) do
    %{
      kernel: %{
        "VmRSS" => anon + 30 * @mib,
        "RssAnon" => anon,
        "RssFile" => 10 * @mib,
        "RssShmem" => 20 * @mib,
        "VmSwap" => 0,
        "Threads" => 20
      },
      vm_allocators: %{
        carriers: %{
          binary_alloc: %{
            mbcs: {carriers, blocks, 4},
            mbcs_pool: {0, 0, 0},
            sbcs: {0, 0, 0},
            sys_alloc: 0
          }
        },
        mseg_segments: carriers,
        erts_mmap: carriers,
        literal_mmap: 0
      }
    }
  end

  test "RSS is split into files, native, VM and unaccounted, which add up" do
    for {anon, native, unaccounted} <- [
          # within the VM's range: nothing unaccounted
          {150 * @mib, 50 * @mib, 0},
          # more than the VM's carriers could hold: the excess is unaccounted
          {400 * @mib, 50 * @mib, 150 * @mib},
          # less than the VM's blocks: pages counted but never written
          {100 * @mib, 50 * @mib, -50 * @mib}
        ] do
      f = Breakdown.fields(raw(anon, 200 * @mib, 100 * @mib), native)
      assert f.unaccounted == unaccounted, inspect({anon, f})
      assert f.rss == f.rss_file + f.rss_shmem + native + f.vm_resident + f.unaccounted
      assert f.vm_resident >= f.vm_blocks and f.vm_resident <= f.vm_mapped
      assert f.unaccounted_share == unaccounted / f.rss
    end
  end

  test "a mostly empty allocator is diagnosed with flags; a well used one is not" do
    [d] = Breakdown.fields(raw(150 * @mib, 200 * @mib, 20 * @mib), 0).fragmentation
    assert d.allocator == :binary_alloc and d.free == 180 * @mib and d.where == :mbcs
    assert Enum.any?(d.advice, &String.starts_with?(&1, "+MBas aoffcbf"))
    assert Enum.any?(d.advice, &String.starts_with?(&1, "+MBacul"))
    assert Enum.any?(d.advice, &(&1 =~ "restarting the node"))

    assert [] == Breakdown.fields(raw(150 * @mib, 200 * @mib, 150 * @mib), 0).fragmentation
  end

  test "no /proc and no allocator figures: unavailable, not zero" do
    f = Breakdown.fields(%{kernel: :unavailable, vm_allocators: :unavailable}, 0)
    assert f.rss == :unavailable and f.unaccounted == :unavailable
    assert f.unaccounted_share == :unavailable and f.allocators == []
  end
end
