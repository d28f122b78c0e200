defmodule Binscope.Demo.TuningTest do
  use ExUnit.Case, async: false

  alias Binscope.Demo.Tuning

  @moduletag :tmp_dir

  test "fullsweep_after: 0 runs only major GCs; every setting keeps its live window", %{
    tmp_dir: dir
  } do
    r = Tuning.run(scale: 0.2, quiet: true, report_dir: dir)
    by = Map.new(r.results, &{&1.name, &1})
    d = by["defaults"]
    f = by["fullsweep_after: 0"]

    assert length(r.results) == 4
    assert f.minor_gcs == 0 and f.major_gcs > 0
    assert d.minor_gcs > 0
    # Every setting still holds its live window when idle.
    for x <- r.results, do: assert(x.idle_bytes >= r.window * r.size)
    assert File.read!(r.bars_chart) =~ "fullsweep_after: 0"
  end
end
