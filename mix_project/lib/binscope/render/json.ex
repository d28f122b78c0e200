defmodule Binscope.Render.JSON do
  @moduledoc """
  JSON for reports, rendered in Rust by serde_json (Elixir's JSON libraries are hex packages,
  out of reach here). Pids, ports and references become their `inspect` text, `{m, f, a}` tuples
  become `"m:f/a"`, atoms become strings (`nil`/`true`/`false` stay JSON literals). Object keys
  come out sorted, so a report reads the same on every OTP release (the VM's own map order
  differs between releases and between small and large maps).

      iex> Binscope.Render.JSON.encode(%{bytes: 3, call: {:gen_server, :loop, 7}, name: nil})
      ~s({"bytes":3,"call":"gen_server:loop/7","name":null})
  """

  @doc "Encodes `term` (maps, lists, numbers, strings, atoms, pids, MFAs) as JSON text."
  @spec encode(term(), keyword()) :: String.t()
  def encode(term, opts \\ []) do
    Binscope.Native.render_json(plain(term), Keyword.get(opts, :pretty, false) == true)
  end

  @doc """
  The term with pids, ports, refs and MFAs turned into strings (what JSON and CSV show). Terms
  JSON has no form for (improper lists, binaries that are not UTF-8, bitstrings; a process label
  can be any term) become their `inspect` text.
  """
  @spec plain(term()) :: term()
  def plain(%{__struct__: _} = s), do: inspect(s)
  def plain(m) when is_map(m), do: Map.new(m, fn {k, v} -> {plain_key(k), plain(v)} end)

  def plain(l) when is_list(l) do
    if List.improper?(l), do: inspect(l), else: Enum.map(l, &plain/1)
  end

  def plain(b) when is_binary(b), do: if(String.valid?(b), do: b, else: inspect(b))
  def plain(b) when is_bitstring(b), do: inspect(b)

  def plain({m, f, a}) when is_atom(m) and is_atom(f) and is_integer(a),
    do: "#{inspect(m)}:#{f}/#{a}" |> String.trim_leading(":")

  def plain(t) when is_tuple(t), do: t |> Tuple.to_list() |> plain()
  def plain(x) when is_pid(x) or is_port(x) or is_reference(x) or is_function(x), do: inspect(x)
  def plain(x), do: x

  defp plain_key(k) when is_atom(k) or is_binary(k) or is_integer(k), do: k
  defp plain_key(k), do: inspect(k)
end
