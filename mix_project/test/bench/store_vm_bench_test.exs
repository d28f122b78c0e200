defmodule Binscope.Bench.StoreVmBenchTest do
  # Suite 1 (report, not a timed test): store vs the VM. `make bench` runs it; the smoke version
  # runs in the default suite (smoke_test.exs).
  use Binscope.StoreCase, async: false

  alias Binscope.Bench.Report
  alias Binscope.Bench.Suite.StoreVm

  @moduletag :bench

  @tag timeout: :infinity
  test "store vs the VM: steady cycle and intern" do
    r = StoreVm.run()
    Enum.each(r.report.tables, &IO.write(Report.render(&1)))
    {:ok, paths} = Report.write("store_vm", r.report)
    IO.puts("\nwrote " <> Enum.join(paths, ", "))

    for {_size, cmp} <- r.cycle, do: assert(cmp.left_behind.store_bytes == 0)
  end
end
