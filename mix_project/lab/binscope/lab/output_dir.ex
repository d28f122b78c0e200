defmodule Binscope.Lab.OutputDir do
  @moduledoc """
  Where Binscope writes its reports (charts from the demos and benchmarks).

  By default `reports/` at the repository root (gitignored); the environment variable
  `BINSCOPE_REPORT_DIR` overrides it. Nothing is created until a report is written
  (`Binscope.Chart` creates missing directories).
  """

  @default Path.expand("../../../../reports", __DIR__)

  @doc """
  The report directory, as an absolute path: `BINSCOPE_REPORT_DIR` (expanded) when set and
  non-empty, else `reports/` at the repository root.
  """
  @spec dir() :: String.t()
  def dir do
    case System.get_env("BINSCOPE_REPORT_DIR") do
      nil -> @default
      "" -> @default
      dir -> Path.expand(dir)
    end
  end

  @doc """
  The path of report file `name` inside `dir/0`. `name` must be a plain relative file name
  (no `..`), so a report can never be written outside the report directory.
  """
  @spec path(String.t()) :: String.t()
  def path(name) when is_binary(name) do
    parts = Path.split(name)

    if name == "" or Path.type(name) != :relative or ".." in parts do
      raise ArgumentError,
            "report name must be a relative path without '..', got: #{inspect(name)}"
    end

    Path.join(dir(), name)
  end
end
