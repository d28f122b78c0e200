defmodule Binscope.Memory.Watch do
  @moduledoc """
  `mix binscope.top --watch SECONDS`: refreshes the top list every `SECONDS`, ranked by growth
  over the last interval (`Binscope.top/2` with `window:`), with each process's delta.

  On a terminal each refresh redraws the screen in place (cursor home and clear: no colors are
  used, so `NO_COLOR` changes nothing but is honoured all the same by never emitting any);
  when stdout is not a terminal (a pipe, a file) each refresh is printed after the previous
  one, headed by a timestamp line. `--count N` stops after N refreshes (default: until
  interrupted).

  Cost: every refresh is two snapshots of the node (see `Binscope.Memory.Growth`).
  """

  alias Binscope.CLI.Options
  alias Binscope.Render

  @doc false
  def maybe_watch(:top, node, %{watch: seconds} = o) do
    tty? = terminal?()
    count = Map.get(o, :count, :infinity)
    {:watched, loop(node, o, seconds * 1000, tty?, count, 1)}
  end

  def maybe_watch(_task, _node, _o), do: :once

  defp loop(_node, _o, _ms, _tty?, count, i) when is_integer(count) and i > count, do: 0

  defp loop(node, o, ms, tty?, count, i) do
    by = Map.get(o, :by, Options.default(:top, :by))

    opts =
      [node: node, by: by, timeout: o.timeout, window: ms] ++
        Enum.to_list(Map.take(o, [:detail, :workers]))

    case Binscope.top(Map.get(o, :limit, Options.default(:top, :limit)), opts) do
      {:ok, rows} ->
        stamp =
          "binscope top #{node} by #{by}, growth over " <>
            "#{div(ms, 1000)} s, #{DateTime.utc_now() |> DateTime.truncate(:second)}\n"

        if tty?, do: IO.write("\e[H\e[2J")
        IO.write([stamp, Render.render(:top, rows, o.format), "\n"])
        loop(node, o, ms, tty?, count, i + 1)

      {:error, reason} ->
        IO.puts(:stderr, "error: " <> Render.reason(reason))
        1
    end
  end

  # The VM knows whether its standard output is a terminal: :io.columns/0 fails otherwise.
  # NO_COLOR (https://no-color.org) asks for no color; this output has none.
  defp terminal? do
    match?({:ok, _}, :io.columns())
  end
end
