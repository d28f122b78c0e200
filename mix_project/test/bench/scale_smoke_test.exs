defmodule Binscope.Bench.ScaleSmokeTest do
  # The scale suite at a few thousand processes, in the default `mix test`, so it never rots.
  # Asserts what every row must get right (leakers found by bytes, counts, a report written),
  # never timings.
  use ExUnit.Case, async: false

  alias Binscope.Bench.Report
  alias Binscope.Bench.Suite.Scale

  @tag timeout: 300_000
  test "every row runs, finds every leaker by its exact bytes and writes its report" do
    o = Scale.smoke_opts()
    r = Scale.run(o)
    pairs = Enum.filter(r.rows, &Map.has_key?(&1, :ratio))

    assert Enum.map(pairs, &{&1.n, &1.name}) == [
             {o[:small], "leaks() targeted"},
             {o[:small], "snapshot() with USS/PSS"},
             {o[:large], "leaks() targeted"},
             {o[:large], "leaks(mode: :full)"},
             {o[:large], "processes(detail: :basic)"}
           ]

    for row <- pairs do
      assert row.ratio > 0
      assert length(row.ours_ns) == o[:rounds] and length(row.anchor_ns) == o[:rounds]
    end

    # Every leaker's reclaimed_bytes is exactly what it planted, in every run. recon's
    # algorithm ranks by references freed, so a process that dropped more references than a
    # small leaker (the test runner's own garbage) can push one out of its top 10: counted, not
    # asserted.
    for row <- pairs, String.starts_with?(row.name, "leaks") do
      assert row.found == o[:leakers], row.name
      assert row.anchor_found in 0..o[:leakers], row.name
    end

    basic = Enum.find(pairs, &(&1.name == "processes(detail: :basic)"))
    assert basic.results >= o[:large]
    assert basic.result_bytes_per_process > 0

    proofs = Enum.filter(r.rows, &Map.has_key?(&1, :proof))
    assert length(proofs) == 6
    assert Enum.all?(proofs, &(is_integer(&1.long_schedule_ms) and &1.n == o[:large]))

    # A row that saw a long_schedule says where its worst one was; one that saw none, nothing.
    for row <- pairs ++ proofs do
      if row.long_schedule_ms > 0,
        do: assert(row.long_schedule_at =~ " -> "),
        else: assert(row.long_schedule_at == nil)
    end

    floors = Enum.filter(r.rows, &Map.has_key?(&1, :floor_ns))
    assert Enum.map(floors, & &1.n) == [o[:small], o[:large]]
    assert Enum.all?(floors, &(&1.floor_ns > 0))

    dir =
      Path.join(System.tmp_dir!(), "binscope_scale_smoke_#{System.unique_integer([:positive])}")

    assert {:ok, paths} = Report.write("scale", r.report, dir)
    assert File.read!(Path.join(dir, "scale.csv")) =~ "leaks(mode: :full)"
    assert length(paths) == 5
    File.rm_rf!(dir)
  end

  @tag timeout: 300_000
  test "only: runs the rows it names, at the sizes they use" do
    r = Scale.run(Keyword.put(Scale.smoke_opts(), :only, [:basic]))
    large = Scale.smoke_opts()[:large]

    assert Enum.map(r.rows, &(&1[:name] || &1[:proof])) == [
             "floor: process_info(pid, [:binary]) per process",
             "processes(detail: :basic)",
             "processes(detail: :basic)"
           ]

    assert Enum.all?(r.rows, &(&1.n == large))
    assert_raise ArgumentError, ~r/unknown rows \[:nope\]/, fn -> Scale.run(only: [:nope]) end
  end
end
