defmodule Binscope.Report.Table do
  @moduledoc "Plain-text tables for the console (columns padded, numbers right-aligned)."

  @doc """
  Renders `rows` (lists of cells) under `headers`.

      iex> Binscope.Report.Table.render(["step", "bytes"], [["a", 1], ["bb", 22]]) |> IO.iodata_to_binary()
      "step | bytes\\n-----+------\\na    |     1\\nbb   |    22\\n"
  """
  @spec render([String.t()], [[term()]]) :: iodata()
  def render(headers, rows) do
    cells = Enum.map(rows, fn row -> Enum.map(row, &cell/1) end)

    widths =
      Enum.reduce([headers | cells], List.duplicate(0, length(headers)), fn row, acc ->
        Enum.zip_with(row, acc, fn c, w -> max(String.length(c), w) end)
      end)

    numeric =
      Enum.map(0..(length(headers) - 1), fn i -> Enum.all?(rows, &is_number(Enum.at(&1, i))) end)

    line = fn row, align? ->
      row
      |> Enum.zip(widths)
      |> Enum.zip(numeric)
      |> Enum.map(fn {{c, w}, num?} ->
        if align? and num?, do: String.pad_leading(c, w), else: String.pad_trailing(c, w)
      end)
      |> Enum.join(" | ")
      |> String.trim_trailing()
    end

    sep = widths |> Enum.map(&String.duplicate("-", &1)) |> Enum.join("-+-")

    [line.(headers, false), "\n", sep, "\n", Enum.map(cells, &[line.(&1, true), "\n"])]
  end

  defp cell(c) when is_binary(c), do: c
  defp cell(c) when is_float(c), do: :erlang.float_to_binary(c, decimals: 2)
  defp cell(c), do: to_string(c)
end
