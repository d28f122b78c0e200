defmodule Binscope.Render do
  @moduledoc "Renders the command line's reports as a table, JSON or CSV."

  alias Binscope.Render.{CSV, Format, JSON, Table}

  # CSV and JSON: every field, by its name. Tables: what fits in about 100 columns, with short
  # headers (sizes in 5 characters: K, M, G are KiB, MiB, GiB).
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
    :waste_bytes,
    :reclaimed_bytes,
    :pinned_bytes,
    :reclaimed_refs,
    :estimated_bytes,
    :likely_garbage_bytes,
    :suggestion,
    :off_heap_queue,
    :reason
  ]
  @process_table [
    pid: "pid",
    name: "name",
    memory: "memory",
    binary_bytes: "binary",
    binary_pss: "bin_pss",
    binary_uss: "bin_uss",
    native_bytes: "native",
    message_queue_len: "mq"
  ]
  @leak_table [
    pid: "pid",
    name: "name",
    waste_bytes: "waste",
    reclaimed_bytes: "freed",
    suggestion: "suggestion",
    current_function: "current"
  ]
  # Numbers that are counts, not bytes.
  @counts [:message_queue_len, :reclaimed_refs]
  @default_width 100

  @doc """
  Renders a report of `task` in `format`.

  Options: `node:` the node inspected (tables name it once, above the rows, when the rows do not
  say; a pid is printed as that node sees it: `<0.150.0>`); `width:` the widest line of a table
  (default: the terminal's width within 80..100, else 100). Tables cut names, functions and
  reasons to fit; JSON and CSV keep every field whole.
  """
  @spec render(atom(), term(), :table | :json | :csv, keyword()) :: iodata()
  def render(task, report, format, opts \\ [])

  def render(task, rows, :json, _opts) when task in [:top, :leaks] and is_list(rows),
    do: [JSON.encode(Enum.map(rows, &local_pid/1), pretty: true), "\n"]

  def render(_task, report, :json, _opts), do: [JSON.encode(report, pretty: true), "\n"]

  def render(:memory, m, :csv, _opts), do: Binscope.Memory.Render.csv(m)
  def render(:memory, m, :table, _opts), do: Binscope.Memory.Render.table(m)

  def render(task, rows, :csv, _opts) when task in [:top, :leaks] do
    cols = if task == :top, do: @process_cols, else: @leak_cols
    cols = if growth?(rows), do: [:pid, :name, :growth | tl(tl(cols))], else: cols
    cols = cols ++ [:node]
    cells = Enum.map(rows, fn r -> Enum.map(cols, &csv_cell(r, &1)) end)
    CSV.encode(Enum.map(cols, &Atom.to_string/1), cells)
  end

  def render(task, rows, :table, opts) when task in [:top, :leaks] do
    cols = if task == :top, do: @process_table, else: leak_table(rows)
    # top --window: the growth over the window comes right after the identity.
    cols =
      if growth?(rows),
        do: [{:pid, "pid"}, {:name, "name"}, {:growth, "growth"} | tl(tl(cols))],
        else: cols

    width = Keyword.get_lazy(opts, :width, &terminal_width/0)
    nodes = rows |> Enum.map(&row_node/1) |> Enum.uniq()

    {head, one_node?} =
      case {nodes, Keyword.get(opts, :node)} do
        {[n], _} -> {["node: ", to_string(n), "\n"], true}
        {[], nil} -> {[], true}
        {[], n} -> {["node: ", to_string(n), "\n"], true}
        _ -> {[], false}
      end

    cells = Enum.map(rows, fn r -> Enum.map(cols, &table_cell(r, elem(&1, 0), one_node?)) end)
    keys = Enum.map(cols, &elem(&1, 0))
    index = fn ks -> for {k, i} <- Enum.with_index(keys), k in ks, do: i end
    notes = if task == :leaks, do: Enum.map(rows, &short_reason/1), else: nil

    table_opts =
      [width: width, flex: index.([:name, :current_function]), min: 12] ++
        [cut_left: index.([:name, :current_function])] ++
        [right: index.(keys -- [:pid, :name, :suggestion, :current_function])] ++
        if(notes, do: [notes: notes], else: [])

    [head, Table.render(Enum.map(cols, &elem(&1, 1)), cells, table_opts)]
  end

  # A dry run frees nothing: its table shows the estimates instead.
  defp leak_table(rows) do
    if rows != [] and Enum.all?(rows, &(&1[:reclaimed_bytes] == nil)),
      do:
        @leak_table
        |> List.keyreplace(:waste_bytes, 0, {:estimated_bytes, "estimated"})
        |> List.keyreplace(:reclaimed_bytes, 0, {:likely_garbage_bytes, "likely"}),
      else: @leak_table
  end

  defp growth?(rows), do: match?([%{growth: _} | _], rows)

  defp terminal_width do
    case :io.columns() do
      {:ok, c} -> c |> max(80) |> min(@default_width)
      _ -> @default_width
    end
  end

  defp row_node(%{pid: pid}) when is_pid(pid), do: node(pid)
  defp row_node(%{node: n}), do: n
  defp row_node(_), do: nil

  defp csv_cell(r, :pid), do: pid_text(r[:pid])
  defp csv_cell(r, :name), do: name(r)
  defp csv_cell(r, k), do: JSON.plain(Map.get(r, k))

  defp table_cell(r, :pid, true), do: pid_text(r[:pid])
  defp table_cell(r, :pid, false), do: "#{row_node(r)} #{pid_text(r[:pid])}"
  defp table_cell(r, :name, _), do: name(r)

  defp table_cell(r, k, _) do
    case Map.get(r, k) do
      nil -> "-"
      n when is_integer(n) and k in @counts -> n
      n when is_integer(n) -> Format.short_bytes(n)
      v -> v |> JSON.plain() |> to_string()
    end
  end

  # JSON: the pid as its own node sees it, next to that node.
  defp local_pid(%{pid: pid} = r) when is_pid(pid),
    do: r |> Map.put(:pid, pid_text(pid)) |> Map.put_new(:node, node(pid))

  defp local_pid(r), do: r

  # The first clause of a reason (what was seen; the remedy is the suggestion column).
  defp short_reason(%{reason: reason}) when is_binary(reason),
    do: reason |> String.split("; ", parts: 2) |> hd()

  defp short_reason(_), do: nil

  @doc """
  A pid as its own node prints it (`<0.150.0>`), whichever node holds the pid term: the node
  index of `pid_to_list/1` is local to each node (0 on the pid's own), its other two numbers are
  not. Anything else as `inspect/1` shows it.
  """
  @spec pid_text(term()) :: String.t()
  def pid_text(pid) when is_pid(pid) do
    [_node_index, number, serial] =
      pid
      |> :erlang.pid_to_list()
      |> List.to_string()
      |> String.trim("<")
      |> String.trim(">")
      |> String.split(".")

    "<0.#{number}.#{serial}>"
  end

  def pid_text(nil), do: "-"
  def pid_text(other), do: inspect(other)

  @doc """
  What to call a process, in this order: its registered name, its label (`proc_lib:set_label/1`,
  OTP 27+), its initial call as proc_lib records it (unless that is only `erlang:apply/2`, the
  initial call of every `spawn/1` of a fun), its current function.
  """
  @spec name(map()) :: String.t()
  def name(%{registered_name: n}) when is_atom(n) and n not in [nil, :undefined], do: inspect(n)
  def name(%{label: l}) when l not in [nil, :undefined], do: inspect(l, limit: 8)

  def name(%{initial_call: init} = r) when init not in [nil, {:erlang, :apply, 2}],
    do: if(init == :undefined, do: current(r), else: JSON.plain(init))

  def name(r), do: current(r)

  defp current(r) do
    case r[:current_function] do
      {_, _, _} = mfa -> JSON.plain(mfa)
      _ -> "-"
    end
  end

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
