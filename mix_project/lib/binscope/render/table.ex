defmodule Binscope.Render.Table do
  @moduledoc "Plain-text tables for the console (columns padded, numbers right-aligned)."

  @ellipsis "…"

  @doc """
  Renders `rows` (lists of cells) under `headers`.

  Options:
  - `width:` the widest a line may be (default: unbounded). Columns listed in `flex:` are cut
    (ending in `…`) to fit, widest first, down to `min:` characters (default 8) each;
  - `flex:` indices of the columns that may be cut;
  - `cut_left:` indices of flex columns whose functions (`m:f/arity`) are cut at their start
    instead (`…Scenario:idle/0`: the end of a module-qualified function is the part that tells
    processes apart); other text there is cut at its end;
  - `right:` indices of columns to right-align (columns of numbers are right-aligned anyway);
  - `notes:` one string (or nil) per row, printed under its row, indented by 2 and cut to `width:`.

      iex> Binscope.Render.Table.render(["step", "bytes"], [["a", 1], ["bb", 22]]) |> IO.iodata_to_binary()
      "step | bytes\\n-----+------\\na    |     1\\nbb   |    22\\n"
      iex> Binscope.Render.Table.render(["name", "n"], [["abcdefghijkl", 1]], width: 12, flex: [0]) |> IO.iodata_to_binary()
      "name     | n\\n---------+--\\nabcdefg… | 1\\n"
  """
  @spec render([String.t()], [[term()]], keyword()) :: iodata()
  def render(headers, rows, opts \\ []) do
    cells = Enum.map(rows, fn row -> Enum.map(row, &cell/1) end)
    n = length(headers)

    natural =
      Enum.reduce([headers | cells], List.duplicate(0, n), fn row, acc ->
        Enum.zip_with(row, acc, fn c, w -> max(String.length(c), w) end)
      end)

    widths = fit(natural, Keyword.get(opts, :width), Keyword.get(opts, :flex, []), opts)
    right = Keyword.get(opts, :right, [])
    left_cut = Keyword.get(opts, :cut_left, [])

    align =
      Enum.map(0..(n - 1), fn i ->
        i in right or (rows != [] and Enum.all?(rows, &is_number(Enum.at(&1, i))))
      end)

    line = fn row, align? ->
      [row, widths, align, 0..(n - 1)]
      |> Enum.zip()
      |> Enum.map(fn {c, w, right?, i} ->
        c = if i in left_cut and c =~ ~r"/\d+$", do: cut_start(c, w), else: cut(c, w)
        if align? and right?, do: String.pad_leading(c, w), else: String.pad_trailing(c, w)
      end)
      |> Enum.join(" | ")
      |> String.trim_trailing()
    end

    sep = widths |> Enum.map(&String.duplicate("-", &1)) |> Enum.join("-+-")
    notes = Keyword.get(opts, :notes, List.duplicate(nil, length(cells)))
    note_width = Keyword.get(opts, :width) || :infinity

    body =
      cells
      |> Enum.zip(notes)
      |> Enum.map(fn
        {row, nil} -> [line.(row, true), "\n"]
        {row, note} -> [line.(row, true), "\n  ", cut(note, sub(note_width, 2)), "\n"]
      end)

    [line.(headers, false), "\n", sep, "\n", body]
  end

  @doc """
  `text` cut to `width` characters, its last one `…` when something was cut.

      iex> Binscope.Render.Table.cut("abcdef", 4)
      "abc…"
  """
  @spec cut(String.t(), non_neg_integer() | :infinity) :: String.t()
  def cut(text, :infinity), do: text

  def cut(text, width) do
    if String.length(text) <= width,
      do: text,
      else: String.slice(text, 0, max(width - 1, 0)) <> @ellipsis
  end

  @doc """
  `text` cut to `width` characters at its start, its first one `…` when something was cut.

      iex> Binscope.Render.Table.cut_start("Binscope.LeakScenario:idle/0", 12)
      "…ario:idle/0"
  """
  @spec cut_start(String.t(), non_neg_integer()) :: String.t()
  def cut_start(text, width) do
    len = String.length(text)
    if len <= width, do: text, else: @ellipsis <> String.slice(text, len - width + 1, width)
  end

  defp sub(:infinity, _), do: :infinity
  defp sub(w, k), do: max(w - k, 0)

  # Narrows the widest flex column one character at a time until the line fits.
  defp fit(widths, nil, _flex, _opts), do: widths
  defp fit(widths, _width, [], _opts), do: widths

  defp fit(widths, width, flex, opts) do
    min = Keyword.get(opts, :min, 8)
    total = Enum.sum(widths) + 3 * (length(widths) - 1)

    if total <= width do
      widths
    else
      {w, i} = flex |> Enum.map(&{Enum.at(widths, &1), &1}) |> Enum.max()
      if w <= min, do: widths, else: fit(List.replace_at(widths, i, w - 1), width, flex, opts)
    end
  end

  defp cell(c) when is_binary(c), do: c
  defp cell(c) when is_float(c), do: :erlang.float_to_binary(c, decimals: 2)
  defp cell(c), do: to_string(c)
end
