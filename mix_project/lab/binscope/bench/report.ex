defmodule Binscope.Bench.Report do
  @moduledoc """
  Benchmark output: console tables, and markdown, CSV and SVG files under the report directory.

  A report is a map:

      %{
        title: "Store vs the VM",
        intro: "One paragraph: what was measured, how, on what machine.",   # optional
        tables: [%{title: "throughput", headers: ["size", "GiB/s"], rows: [["1 KiB", 5.2]]}],
        notes: ["a line under the tables"],                                  # optional
        chart: %{title: "speed vs :binary.copy", y_label: "x", bars: [{"1 KiB put", 0.17}]}  # optional
      }

  `write/2` writes `NAME.md` (every table), `NAME.csv` (the first table; the others go to
  `NAME-2.csv`, `NAME-3.csv`, ...) and, when the report has a chart, `NAME.svg` drawn by
  `Binscope.Chart.bars/2` (the same Rust `plotters` path as the demos' charts).
  """

  alias Binscope.Bench.Comparison
  alias Binscope.Render.Table

  @typedoc "A table: headers and rows of cells (strings or numbers)."
  @type table :: %{title: String.t(), headers: [String.t()], rows: [[term()]]}

  @typedoc "A report (see the moduledoc)."
  @type report :: %{
          required(:title) => String.t(),
          required(:tables) => [table()],
          optional(:intro) => String.t(),
          optional(:notes) => [String.t()],
          optional(:chart) => %{
            title: String.t(),
            y_label: String.t(),
            bars: [{String.t(), number()}]
          }
        }

  @doc """
  The directory benchmark reports go to: `bench/` under `Binscope.Lab.OutputDir.dir/0` (`reports/` at
  the repository root, or `$BINSCOPE_REPORT_DIR`).
  """
  @spec dir() :: Path.t()
  def dir, do: Path.join(Binscope.Lab.OutputDir.dir(), "bench")

  @doc """
  The standard table of a comparison: time per call (median, p99, min, max), throughput when
  known, speed against the baseline, and the allocation and GC figures.
  """
  @spec comparison_table(Comparison.t(), String.t()) :: table()
  def comparison_table(%Comparison{} = cmp, title \\ "results") do
    headers = [
      "alternative",
      "median",
      "p99",
      "min",
      "max",
      "throughput",
      "speed vs #{cmp.baseline}",
      "reductions/call",
      "heap words/call",
      "binary bytes/call",
      "minor GCs/run",
      "major GCs/run"
    ]

    rows =
      for r <- cmp.results do
        [
          r.name,
          duration(r.time_ns.median),
          duration(r.time_ns.p99),
          duration(r.time_ns.min),
          duration(r.time_ns.max),
          if(r.throughput, do: rate(r.throughput), else: "-"),
          ratio(cmp.ratios[r.name].speed),
          round(r.reductions),
          round(r.heap_words),
          round(r.binary_bytes),
          r.minor_gcs,
          r.major_gcs
        ]
      end

    %{title: title, headers: headers, rows: rows}
  end

  @doc "Renders a table for the console (a title line, then `Binscope.Render.Table`)."
  @spec render(table()) :: iodata()
  def render(%{title: title, headers: headers, rows: rows}) do
    ["\n", title, "\n", Table.render(headers, rows)]
  end

  @doc """
  Writes the report's files under `dir` (default `dir/0`); returns the paths written, or
  `{:error, reason}` when a file could not be written. `name` becomes the file names' stem
  (letters, digits, `-` and `_` only).
  """
  @spec write(String.t(), report(), Path.t()) :: {:ok, [Path.t()]} | {:error, term()}
  def write(name, report, dir \\ dir()) do
    unless is_binary(name) and name =~ ~r/\A[A-Za-z0-9_-]+\z/,
      do: raise(ArgumentError, "report name must be [A-Za-z0-9_-]+, got: #{inspect(name)}")

    md = Path.join(dir, name <> ".md")

    csvs =
      report.tables
      |> Enum.with_index(1)
      |> Enum.map(fn {t, i} ->
        stem = if i == 1, do: name, else: "#{name}-#{i}"
        {Path.join(dir, stem <> ".csv"), csv(t)}
      end)

    with :ok <- File.mkdir_p(dir),
         :ok <- File.write(md, markdown(report)),
         :ok <- Enum.reduce_while(csvs, :ok, &write_file/2),
         {:ok, svg} <- chart(report, Path.join(dir, name <> ".svg")) do
      {:ok, [md | Enum.map(csvs, &elem(&1, 0))] ++ List.wrap(svg)}
    end
  end

  defp write_file({path, data}, :ok) do
    case File.write(path, data) do
      :ok -> {:cont, :ok}
      error -> {:halt, error}
    end
  end

  defp chart(%{chart: %{bars: bars} = spec}, path) do
    case Enum.filter(bars, fn {_label, v} -> is_number(v) end) do
      [] ->
        {:ok, nil}

      bars ->
        case Binscope.Chart.bars(path, %{title: spec.title, y_label: spec.y_label, bars: bars}) do
          :ok -> {:ok, path}
          {:error, _} = error -> error
        end
    end
  end

  defp chart(_report, _path), do: {:ok, nil}

  @doc "The report as markdown: title, intro, each table, notes."
  @spec markdown(report()) :: iodata()
  def markdown(report) do
    [
      "# ",
      report.title,
      "\n\n",
      if(report[:intro], do: [report.intro, "\n\n"], else: []),
      Enum.map(report.tables, fn t ->
        ["## ", t.title, "\n\n", md_table(t), "\n"]
      end),
      Enum.map(report[:notes] || [], &["- ", &1, "\n"])
    ]
  end

  @doc """
  A table as markdown.

      iex> Binscope.Bench.Report.md_table(%{headers: ["a", "b"], rows: [["x", 1.5]]}) |> IO.iodata_to_binary()
      "| a | b |\\n| --- | --- |\\n| x | 1.50 |\\n"
  """
  @spec md_table(%{headers: [String.t()], rows: [[term()]]}) :: iodata()
  def md_table(%{headers: headers, rows: rows}) do
    line = fn cells -> ["| ", Enum.intersperse(Enum.map(cells, &cell/1), " | "), " |\n"] end
    [line.(headers), line.(Enum.map(headers, fn _ -> "---" end)), Enum.map(rows, line)]
  end

  @doc """
  A table as CSV (RFC 4180 quoting; floats with up to 6 decimals).

      iex> Binscope.Bench.Report.csv(%{headers: ["a", "b"], rows: [["x,y", 1.5]]}) |> IO.iodata_to_binary()
      "a,b\\n\\"x,y\\",1.5\\n"
  """
  @spec csv(%{headers: [String.t()], rows: [[term()]]}) :: iodata()
  def csv(%{headers: headers, rows: rows}) do
    Enum.map([headers | rows], fn row ->
      [Enum.intersperse(Enum.map(row, &csv_cell/1), ","), "\n"]
    end)
  end

  defp csv_cell(c) when is_float(c), do: :erlang.float_to_binary(c, [:short]) |> trim6()
  defp csv_cell(nil), do: ""

  defp csv_cell(c) do
    s = to_string(c)
    if s =~ ~r/[",\n]/, do: ~s(") <> String.replace(s, ~s("), ~s("")) <> ~s("), else: s
  end

  defp trim6(s) do
    case Float.parse(s) do
      {f, ""} when abs(f) >= 1.0e-6 -> f |> Float.round(6) |> :erlang.float_to_binary([:short])
      _ -> s
    end
  end

  defp cell(c) when is_float(c), do: :erlang.float_to_binary(c, decimals: 2)
  defp cell(nil), do: "-"
  defp cell(c), do: c |> to_string() |> String.replace("|", "\\|")

  ## Formatting helpers (used by the suites too)

  @doc """
  A duration in nanoseconds, human-readable.

      iex> Binscope.Bench.Report.duration(1_500)
      "1.50 µs"
      iex> Binscope.Bench.Report.duration(2_500_000)
      "2.50 ms"
  """
  @spec duration(number()) :: String.t()
  def duration(ns) when ns < 1_000, do: "#{round(ns)} ns"
  def duration(ns) when ns < 1_000_000, do: fixed(ns / 1_000) <> " µs"
  def duration(ns) when ns < 1_000_000_000, do: fixed(ns / 1_000_000) <> " ms"
  def duration(ns), do: fixed(ns / 1_000_000_000) <> " s"

  @doc """
  Bytes per second, human-readable.

      iex> Binscope.Bench.Report.rate(3 * 1024 * 1024 * 1024)
      "3.00 GiB/s"
  """
  @spec rate(number()) :: String.t()
  def rate(bps) when bps >= 1024 * 1024 * 1024, do: fixed(bps / 1024 / 1024 / 1024) <> " GiB/s"
  def rate(bps) when bps >= 1024 * 1024, do: fixed(bps / 1024 / 1024) <> " MiB/s"
  def rate(bps), do: fixed(bps / 1024) <> " KiB/s"

  @doc """
  A ratio as `1.23x`, or `-` when unknown.

      iex> Binscope.Bench.Report.ratio(2.0)
      "2.00x"
  """
  @spec ratio(number() | nil) :: String.t()
  def ratio(nil), do: "-"
  def ratio(x), do: fixed(x) <> "x"

  defp fixed(x), do: :erlang.float_to_binary(x / 1, decimals: 2)
end
