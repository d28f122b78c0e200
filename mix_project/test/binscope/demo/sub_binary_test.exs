defmodule Binscope.Demo.SubBinaryTest do
  use Binscope.StoreCase, async: false

  alias Binscope.Demo.SubBinary

  @moduletag :tmp_dir

  test "slices pin every parent byte; :binary.copy/1 releases them all", %{tmp_dir: dir} do
    base = settle()
    size = 256 * 1024

    r =
      SubBinary.run(
        scale: 0.2,
        size: size,
        label: :demo_sub_binary_test,
        quiet: true,
        report_dir: dir
      )

    [held, sliced, copied] = r.rows

    assert held.store_count == r.count and held.store_bytes == r.count * size
    # After dropping the payloads and a GC, the slices still pin all of them.
    assert sliced.store_count == r.count and sliced.store_bytes == r.count * size
    # Binscope.processes sees the keeper alone pinning every parent byte, then only the copies.
    assert sliced.bin_uss >= r.count * size
    assert copied.bin_uss <= r.count * 200
    # After copying the slices and a GC, nothing is pinned.
    assert copied.store_count == 0 and copied.store_bytes == 0
    assert eventually(fn -> live() == base end)
    assert File.exists?(r.chart)

    # The chart can show the pinned plateau: the samples between slicing and copying keep every
    # parent byte for at least most of the phase's hold (60 ms by default), not a fraction of a
    # millisecond.
    [{t_slice, _}] = Enum.filter(r.recording.events, &(elem(&1, 1) =~ "slices, drop"))
    [{t_copy, _}] = Enum.filter(r.recording.events, &(elem(&1, 1) =~ ":binary.copy"))
    pinned = for {t, %{store: b}} <- r.recording.samples, t > t_slice, t < t_copy, do: {t, b}
    assert t_copy - t_slice >= 50
    assert length(pinned) >= 5 and Enum.all?(pinned, fn {_, b} -> b == r.count * size end)
  end
end
