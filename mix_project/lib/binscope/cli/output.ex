defmodule Binscope.CLI.Output do
  @moduledoc "Renders the command line's reports as a table, JSON or CSV."

  alias Binscope.Report.{CSV, Format, JSON, Table}

  @process_cols [
    :pid,
    :name,
    :memory,
    :binary_bytes,
    :binary_pss,
    :binary_uss,
    :native_bytes,
    :message_queue_len,
    :current_function
  ]
  @leak_cols [
    :pid,
    :name,
    :reclaimed_bytes,
    :reclaimed_refs,
    :estimated_bytes,
    :likely_garbage_bytes,
    :suggestion,
    :reason
  ]

  @doc "Renders a report of `task` in `format`."
  @spec render(atom(), term(), :table | :json | :csv) :: iodata()
  def render(_task, report, :json), do: [JSON.encode(report, pretty: true), "\n"]

  def render(:memory, m, :csv), do: Binscope.Memory.Render.csv(m)
  def render(:memory, m, :table), do: Binscope.Memory.Render.table(m)

  def render(task, rows, format) when task in [:top, :leaks] do
    cols = if task == :top, do: @process_cols, else: @leak_cols
    # top --window: the growth over the window comes right after the identity.
    cols =
      if match?([%{growth: _} | _], rows), do: [:pid, :name, :growth | tl(tl(cols))], else: cols

    cells = Enum.map(rows, fn r -> Enum.map(cols, &cell(r, &1, format)) end)
    headers = Enum.map(cols, &Atom.to_string/1)

    case format do
      :csv -> CSV.encode(headers, cells)
      :table -> Table.render(headers, cells)
    end
  end

  defp cell(r, :name, _), do: name(r)
  defp cell(r, k, :csv), do: JSON.plain(Map.get(r, k))

  defp cell(r, k, :table) do
    case Map.get(r, k) do
      nil -> "-"
      n when is_integer(n) and k != :message_queue_len and k != :reclaimed_refs -> human(n)
      v -> v |> JSON.plain() |> to_string()
    end
  end

  defp name(%{registered_name: n}) when is_atom(n) and n not in [nil, :undefined],
    do: inspect(n)

  # A process label (proc_lib:set_label/1, OTP 27+) names an unregistered process.
  defp name(%{label: l}) when l != nil, do: inspect(l, limit: 8)
  defp name(r), do: JSON.plain(r.initial_call)

  defp human(n) when is_integer(n), do: Format.bytes(n)

  @doc "A one-line explanation of an error reason (never includes a cookie)."
  @spec reason(term()) :: String.t()
  def reason(:not_distributed), do: "this node is not distributed"
  def reason(:noconnection), do: "no connection to the node (down, unreachable, or wrong cookie)"

  def reason(:timeout),
    do:
      "no result within --timeout (a larger --timeout, or --detail basic / --mode dry_run, " <>
        "which do less)"

  def reason(other), do: inspect(other, limit: 8)
end
