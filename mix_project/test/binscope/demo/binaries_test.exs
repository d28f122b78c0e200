defmodule Binscope.Demo.BinariesTest do
  use ExUnit.Case, async: false

  alias Binscope.Demo.Binaries

  @moduletag :tmp_dir

  test "64 B on the heap, 65 B off-heap; a fan-out shares one copy", %{tmp_dir: dir} do
    big = 1024 * 1024
    r = Binaries.run(scale: 0.1, big_size: big, quiet: true, report_dir: dir)
    w = :erlang.system_info(:wordsize)

    # 64 bytes: a heap binary (2 header words + 64 bytes of data), not listed as a refc binary.
    assert r.small.heap_bytes_each == 2 * w + 64
    assert r.small.pinfo_refs == 0 and r.small.pinfo_bytes == 0
    # 65 bytes: a small ProcBin on the heap, the bytes off-heap and listed.
    assert r.large.heap_bytes_each < 65
    assert r.large.pinfo_refs == r.count
    assert r.large.pinfo_bytes == r.count * 65

    # Sending a 1 MiB binary to every receiver: one copy of memory, not one per receiver.
    f = r.fan_big
    assert f.refc >= f.receivers
    assert f.vm_binary_delta < 2 * big
    assert f.vm_binary_delta < div(f.size * f.receivers, 20)
    # Summed over receivers, the naive figure counts the binary once per receiver; the PSS sum
    # counts at most one copy.
    assert f.naive_sum == f.size * f.receivers
    assert f.pss_sum <= f.size and f.pss_sum >= div(f.size, 2)
    # Each receiver holds a ProcBin of a few words.
    assert f.receiver_heap_bytes <= f.receivers * 16 * w
    # The 64-byte one is copied into each receiver's heap.
    assert r.fan_small.receiver_heap_bytes == r.fan_small.receivers * (2 * w + 64)
    assert File.exists?(r.chart)
  end
end
