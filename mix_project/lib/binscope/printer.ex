defmodule Binscope.Printer do
  @moduledoc """
  Prints the result of `Binscope.memory/1`, `top/2`, `processes/1`, `snapshot/1` or `leaks/1` as
  the command line's table, for IEx and remote shells (a release has no Mix, so no mix task):

      Binscope.top(3) |> Binscope.print()
      node: nonode@nohost
      pid       | name             | memory | binary | bin_pss | bin_uss | native | mq
      ----------+------------------+--------+--------+---------+---------+--------+---
      <0.44.0>  | :application_co… |   450K |     0B |      0B |      0B |   128B |  0
      <0.165.0> | …valuator:init/4 |   328K |   1.5K |    1.5K |    1.5K |     0B |  0
      <0.50.0>  | :code_server     |   192K |   4.6K |    2.3K |      0B |    28B |  0

  Sizes take at most 5 characters: `K`, `M` and `G` are KiB, MiB and GiB; `mq` is the length of
  the message queue. Leak results print the first clause of each reason under its row.

  It takes a result as the call returned it (`{:ok, _}`, `{:error, _}`, or the bare value of a
  bang function), and per-node results (`nodes:`) node by node.
  """

  alias Binscope.Render

  @doc """
  Prints `result` as a table on `opts[:device]` (default: the caller's group leader, so a remote
  shell prints on its own terminal) and returns `:ok`. `width:` as in `format/2`.
  """
  @spec print(term(), keyword()) :: :ok
  def print(result, opts \\ []) do
    IO.write(Keyword.get(opts, :device, :stdio), format(result, opts))
  end

  @doc """
  The table `print/2` prints, as iodata. Options: `width:` the widest line (default: the width
  of the caller's terminal, which in a remote shell is the remote user's, within 80..100; 100
  when it has none).

      iex> Binscope.Printer.format({:error, :timeout}) |> IO.iodata_to_binary()
      "error: no result within --timeout (a larger --timeout, or --detail basic / --mode dry_run, which do less)\\n"
  """
  @spec format(term(), keyword()) :: iodata()
  def format(result, opts \\ [])
  def format({:ok, value}, opts), do: format(value, opts)
  def format({:error, reason}, _opts), do: ["error: ", Render.reason(reason), "\n"]

  def format(%{processes: procs} = snapshot, opts) when is_list(procs),
    do: format_rows(procs, Keyword.put_new(opts, :node, Map.get(snapshot, :node)))

  def format(%{total: _, rss: _, node: _} = memory, _opts),
    do: Render.render(:memory, memory, :table)

  def format(rows, opts) when is_list(rows), do: format_rows(rows, opts)

  def format(per_node, opts) when is_map(per_node) and map_size(per_node) > 0 do
    if Enum.all?(per_node, fn {k, v} ->
         is_atom(k) and match?({tag, _} when tag in [:ok, :error], v)
       end) do
      per_node
      |> Enum.sort()
      |> Enum.map(fn
        {node, {:error, _} = e} -> ["node: ", Atom.to_string(node), "\n", format(e, opts), "\n"]
        {node, ok} -> [format(ok, Keyword.put(opts, :node, node)), "\n"]
      end)
    else
      [inspect(per_node, pretty: true), "\n"]
    end
  end

  def format(other, _opts), do: [inspect(other, pretty: true), "\n"]

  defp format_rows([], opts) do
    node = if n = opts[:node], do: ["node: ", to_string(n), "\n"], else: []
    [node, "(no processes)\n"]
  end

  defp format_rows([%{pid: _} | _] = rows, opts) do
    task = if Enum.all?(rows, &Map.has_key?(&1, :suggestion)), do: :leaks, else: :top
    Render.render(task, rows, :table, opts)
  end

  defp format_rows(rows, _opts), do: [inspect(rows, pretty: true), "\n"]
end
