defmodule Binscope.Demo.HibernateTest do
  use ExUnit.Case, async: false

  alias Binscope.Demo.Hibernate

  @moduletag :tmp_dir

  test "a hibernated server's heap is at its minimum; the plain one keeps its heap", %{
    tmp_dir: dir
  } do
    r = Hibernate.run(scale: 0.05, quiet: true, report_dir: dir)

    assert r.hibernated? == %{plain: false, hibernate: true, hibernate_after: true}
    # Hibernated: the heap holds only the live state, below a fresh server's minimum heap.
    assert r.after_idle.hibernate <= r.fresh_heap
    assert r.after_idle.hibernate_after <= r.fresh_heap
    # The plain server still holds the heap its heavy request grew (at least 10x more).
    assert r.after_idle.plain >= 10 * r.after_idle.hibernate
    assert Enum.all?(Map.values(r.rates), &(&1 > 0))
    assert File.exists?(r.chart) and File.read!(r.bars_chart) =~ "hibernate_after"
  end
end
