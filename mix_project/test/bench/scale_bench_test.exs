defmodule Binscope.Bench.ScaleBenchTest do
  # The scale suite (report, not a timed test): `make bench-scale` runs it at 50k and 1M
  # processes (BINSCOPE_SCALE_SMALL / BINSCOPE_SCALE_LARGE / BINSCOPE_SCALE_ROUNDS /
  # BINSCOPE_SCALE_SMALL_ROUNDS override;
  # BINSCOPE_SCALE_ONLY=basic,full runs only those rows, see Scale.rows/0).
  # The VM needs a process limit above the large size: the Makefile passes +P.
  use ExUnit.Case, async: false

  alias Binscope.Bench.Report
  alias Binscope.Bench.Suite.Scale

  @moduletag :bench_scale

  @tag timeout: :infinity
  test "scans at 50k and 1M processes beside recon's algorithm" do
    opts =
      for {key, var} <- [
            small: "BINSCOPE_SCALE_SMALL",
            large: "BINSCOPE_SCALE_LARGE",
            rounds: "BINSCOPE_SCALE_ROUNDS",
            small_rounds: "BINSCOPE_SCALE_SMALL_ROUNDS"
          ],
          v = System.get_env(var),
          do: {key, String.to_integer(v)}

    opts =
      case System.get_env("BINSCOPE_SCALE_ONLY") do
        nil ->
          opts

        names ->
          known = Map.new(Scale.rows(), &{Atom.to_string(&1), &1})
          only = for n <- String.split(names, ",", trim: true), do: Map.fetch!(known, n)
          [{:only, only} | opts]
      end

    r = Scale.run(opts)
    Enum.each(r.report.tables, &IO.write(Report.render(&1)))
    {:ok, paths} = Report.write("scale", r.report)
    IO.puts("\nwrote " <> Enum.join(paths, ", "))

    for row <- r.rows, row[:found], do: assert(row.found == 10, row.name)
  end
end
