defmodule Binscope.Render.CSV do
  @moduledoc """
  RFC 4180 CSV: a header line, then one line per row; fields with commas, quotes or newlines
  are quoted.

      iex> Binscope.Render.CSV.encode(["a", "b"], [[1, "x,y"]]) |> IO.iodata_to_binary()
      "a,b\\r\\n1,\\"x,y\\"\\r\\n"
  """

  @doc "Encodes `rows` under `headers`."
  @spec encode([String.t()], [[term()]]) :: iodata()
  def encode(headers, rows) do
    Enum.map([headers | rows], fn row -> [Enum.map_intersperse(row, ",", &field/1), "\r\n"] end)
  end

  defp field(v) do
    s =
      case Binscope.Render.JSON.plain(v) do
        nil -> ""
        b when is_binary(b) -> b
        other -> to_string(other)
      end

    if String.contains?(s, [",", "\"", "\n", "\r"]),
      do: ["\"", String.replace(s, "\"", "\"\""), "\""],
      else: s
  end
end
