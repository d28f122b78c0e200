defmodule Binscope.Demo.HeapsTest do
  use ExUnit.Case, async: false

  alias Binscope.Demo.Heaps

  @moduletag :tmp_dir

  test "promotion after two minor GCs; GCs counted; an idle neighbour untouched", %{tmp_dir: dir} do
    r = Heaps.run(scale: 0.1, quiet: true, report_dir: dir)
    [_built, once, twice, major] = r.promotion.rows
    list = r.promotion.list_bytes

    # Survived one minor GC: still young. Survived two: the whole list is in the old heap.
    assert once.young >= list and once.old == 0
    assert twice.old >= list and twice.young < list
    # A major GC empties the old heap.
    assert major.old == 0 and major.young >= list

    last = List.last(r.growth)
    assert last.minor > 0 and last.major > 0
    assert last.old > 0
    # Counts only grow.
    assert Enum.map(r.growth, & &1.minor) == Enum.sort(Enum.map(r.growth, & &1.minor))
    # The idle neighbour: same heap, no GC.
    assert r.idle_after.heap == r.idle_before.heap
    assert r.idle_after.minor_gcs == r.idle_before.minor_gcs
    assert File.read!(r.chart) =~ "idle neighbour heap"
    assert IO.iodata_to_binary(Heaps.render(r)) =~ "each process is collected alone"
  end
end
