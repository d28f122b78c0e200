defmodule Binscope.Bench.GcStrategiesBenchTest do
  # Suite 2 (report, not a timed test): GC strategies in a router of large binaries.
  use ExUnit.Case, async: false

  alias Binscope.Bench.Report
  alias Binscope.Bench.Suite.GcStrategies

  @moduletag :bench

  @tag timeout: :infinity
  test "GC strategies under steady, bursty and idle traffic" do
    r = GcStrategies.run()
    Enum.each(r.report.tables, &IO.write(Report.render(&1)))
    {:ok, paths} = Report.write("gc_strategies", r.report)
    IO.puts("\nwrote " <> Enum.join(paths, ", "))

    for {_shape, cmp} <- r.cells,
        res <- cmp.results,
        do: assert(res.custom[:delivered].min == res.custom[:delivered].max)
  end
end
