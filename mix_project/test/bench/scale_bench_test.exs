defmodule Binscope.Bench.ScaleBenchTest do
  # The scale suite (report, not a timed test): `make bench-scale` runs it at 50k and 1M
  # processes (BINSCOPE_SCALE_SMALL / BINSCOPE_SCALE_LARGE / BINSCOPE_SCALE_ROUNDS override;
  # BINSCOPE_SCALE_ONLY picks rows).
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
            rounds: "BINSCOPE_SCALE_ROUNDS"
          ],
          v = System.get_env(var),
          do: {key, String.to_integer(v)}

    # BINSCOPE_SCALE_ONLY=targeted_small,full: those rows alone (see Scale.run/1).
    opts =
      case System.get_env("BINSCOPE_SCALE_ONLY") do
        nil -> opts
        only -> [{:only, only |> String.split(",") |> Enum.map(&String.to_atom/1)} | opts]
      end

    r = Scale.run(opts)
    Enum.each(r.report.tables, &IO.write(Report.render(&1)))
    {:ok, paths} = Report.write("scale", r.report)
    IO.puts("\nwrote " <> Enum.join(paths, ", "))

    for row <- r.rows, row[:found], do: assert(row.found == 10, row.name)
  end
end
