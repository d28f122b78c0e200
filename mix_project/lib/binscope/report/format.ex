defmodule Binscope.Report.Format do
  @moduledoc "Human formatting of figures for tables and reports."

  @doc """
  Bytes with a binary unit.

      iex> Binscope.Report.Format.bytes(1536)
      "1.5 KiB"
      iex> Binscope.Report.Format.bytes(-2 * 1024 * 1024)
      "-2.0 MiB"
  """
  @spec bytes(integer()) :: String.t()
  def bytes(n) when is_integer(n) and n < 0, do: "-" <> bytes(-n)
  def bytes(n) when is_integer(n) and n < 1024, do: "#{n} B"
  def bytes(n) when is_integer(n) and n < 1024 * 1024, do: unit(n / 1024, "KiB")
  def bytes(n) when is_integer(n) and n < 1024 * 1024 * 1024, do: unit(n / 1024 / 1024, "MiB")
  def bytes(n) when is_integer(n), do: unit(n / 1024 / 1024 / 1024, "GiB")

  defp unit(x, u), do: :erlang.float_to_binary(x, decimals: 1) <> " " <> u
end
