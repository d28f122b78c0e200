defmodule Binscope.Bench.ScanBenchTest do
  # Suite 3 (report, not a timed test): what processes/top/leaks cost at 10k and 100k processes.
  use ExUnit.Case, async: false

  alias Binscope.Bench.Report
  alias Binscope.Bench.Suite.Scan

  @moduletag :bench

  @tag timeout: :infinity
  test "scan costs at 10k and 100k processes" do
    r = Scan.run()
    Enum.each(r.report.tables, &IO.write(Report.render(&1)))
    {:ok, paths} = Report.write("scan", r.report)
    IO.puts("\nwrote " <> Enum.join(paths, ", "))

    for {n, cmp, _} <- r.cells,
        res <- cmp.results,
        res.name == "processes()",
        do: assert(res.custom[:processes_seen].min >= n)
  end
end
