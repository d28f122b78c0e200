defmodule Binscope.Render.Format do
  @moduledoc "Human formatting of figures for tables and reports."

  @doc """
  Bytes with a binary unit.

      iex> Binscope.Render.Format.bytes(1536)
      "1.5 KiB"
      iex> Binscope.Render.Format.bytes(-2 * 1024 * 1024)
      "-2.0 MiB"
  """
  @spec bytes(integer()) :: String.t()
  def bytes(n) when is_integer(n) and n < 0, do: "-" <> bytes(-n)
  def bytes(n) when is_integer(n) and n < 1024, do: "#{n} B"
  def bytes(n) when is_integer(n) and n < 1024 * 1024, do: unit(n / 1024, "KiB")
  def bytes(n) when is_integer(n) and n < 1024 * 1024 * 1024, do: unit(n / 1024 / 1024, "MiB")
  def bytes(n) when is_integer(n), do: unit(n / 1024 / 1024 / 1024, "GiB")

  @doc """
  Bytes in at most 5 characters, for narrow table columns (`K`, `M`, `G` are KiB, MiB, GiB):
  one decimal under 10, none above.

      iex> Enum.map([336, 1536, 851_000, 16 * 1024 * 1024, -2048], &Binscope.Render.Format.short_bytes/1)
      ["336B", "1.5K", "831K", "16M", "-2.0K"]
  """
  @spec short_bytes(integer()) :: String.t()
  def short_bytes(n) when is_integer(n) and n < 0, do: "-" <> short_bytes(-n)
  def short_bytes(n) when is_integer(n) and n < 1024, do: "#{n}B"
  def short_bytes(n) when is_integer(n) and n < 1024 * 1024, do: short(n / 1024, "K")
  def short_bytes(n) when is_integer(n) and n < 1024 * 1024 * 1024, do: short(n / 1_048_576, "M")
  def short_bytes(n) when is_integer(n), do: short(n / 1024 / 1024 / 1024, "G")

  defp short(x, u) when x < 9.95, do: :erlang.float_to_binary(x, decimals: 1) <> u
  defp short(x, u), do: "#{round(x)}" <> u

  defp unit(x, u), do: :erlang.float_to_binary(x, decimals: 1) <> " " <> u
end
