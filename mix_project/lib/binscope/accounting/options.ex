defmodule Binscope.Accounting.Options do
  # The options of Binscope.memory/processes/top/leaks/..., written once: one schema per public
  # call, from which `validate!/2` checks a call's options, `doc/1` writes its option docs and
  # Binscope.CLI.Options builds the mix tasks' switches and help. Every bad value raises
  # ArgumentError naming the function and the value; nothing creates an atom from user input.
  @moduledoc false

  alias Binscope.Store.Options, as: Common

  @metrics [
    :memory,
    :heap_size,
    :total_heap_size,
    :stack_size,
    :old_heap_size,
    :message_queue_len,
    :reductions,
    :binary_refs,
    :binary_bytes,
    :binary_uss,
    :binary_pss,
    :native_bytes,
    :native_store_bytes,
    :minor_gcs,
    :bin_vheap_size,
    :bin_old_vheap_size
  ]
  @modes [:targeted, :full, :dry_run]
  # The metrics of `detail: :basic` records (they have no other fields; `native_bytes` needs
  # the virtual binary heap, a full-detail figure).
  @basic_metrics [
    :memory,
    :binary_refs,
    :binary_bytes,
    :binary_uss,
    :binary_pss,
    :native_store_bytes
  ]

  @typedoc """
  An option's type: `{:int, lo, hi}`, `{:one_of, values}`, `{:auto_or_int, lo, hi}` (`:auto`
  or an integer), `:boolean`, `:node` (an atom), `:nodes`, `:pids`.
  """
  @type type ::
          {:int, integer(), integer()}
          | {:one_of, [atom()]}
          | {:auto_or_int, integer(), integer()}
          | :boolean
          | :node
          | :nodes
          | :pids

  @typedoc """
  One option: its type, its default (none when absent: the option is then not in the validated
  map unless given) and one doc line. In a doc, `{name}` names another option (`name:` in the
  API docs, `--name` in the mix tasks' help).
  """
  @type spec :: %{
          required(:type) => type(),
          required(:doc) => String.t(),
          optional(:default) => term()
        }

  # Every option of the accounting calls, with the defaults most calls share:
  # `name: {type, default (:none: no default), doc line}`.
  @specs [
    node: {:node, :none, "the node to inspect, this one when not given"},
    nodes: {:nodes, :none, "many nodes at once: results per node"},
    timeout:
      {{:int, 1, 3_600_000}, 30_000, "give up after this many milliseconds, connection included"},
    limit: {{:int, 1, 1_000_000}, :none, "how many results"},
    by: {{:one_of, @metrics}, :memory, "the metric to rank by"},
    mode:
      {{:one_of, @modes}, :targeted,
       "targeted: forces a GC on the top {candidates} processes only; full: forces a GC " <>
         "of EVERY process (each pauses for its GC: not on a busy production node); " <>
         "dry_run: forces no GC, ranks an estimate"},
    candidates: {{:int, 1, 1_000_000}, 20, "processes collected in targeted mode"},
    # How long the second activity sample of the shortlist waits: a process that ran no
    # reductions over it (and has no mail) counts as idle.
    idle_ms:
      {{:int, 0, 60_000}, 50,
       "how long (ms) the shortlist is watched for activity before ranking (idle " <>
         "processes rank by all the binaries only they hold)"},
    pids: {:pids, :none, "only these processes"},
    detail:
      {{:one_of, [:full, :basic]}, :full,
       "basic: only name, label, memory and binaries (records of those fields alone), at " <>
         "about the cost of a plain process_info(pid, [:binary, :memory]) sweep (full " <>
         "detail's GC items cost about 2.5x more)"},
    workers:
      {{:auto_or_int, 1, 1024}, :auto,
       "scan with this many processes (auto: one per scheduler of the target but one; " <>
         "more ends the scan sooner but competes for more schedulers)"},
    top_shared: {{:int, 0, 10_000}, 10, "how many of the most shared binaries to list"},
    window:
      {{:int, 1, 3_600_000}, :none,
       "rank by growth over this many milliseconds instead of size: two scans that far " <>
         "apart; a growth field shows each process's delta"},
    read_tables:
      {:boolean, true,
       "read readable ETS tables to name those holding binaries (false on huge tables)"},
    max_objects: {{:int, 1, 100_000_000}, 100_000, "objects read per table at most"}
  ]

  @target [:node, :nodes, :timeout]
  # Each public call's options, in doc order: a name, or `{name, overrides}`. Every call also
  # takes the target options (node:, nodes:, timeout:).
  @calls %{
    memory: [],
    ets_tables: [limit: %{default: 10, doc: "how many tables"}],
    processes: [:pids, :detail, :workers],
    snapshot: [:pids, :top_shared, :detail, :workers],
    top: [:by, :detail, :workers, :window],
    rollup: [
      by: %{
        type: {:one_of, [:application, :registered_name, :initial_call, :label]},
        default: :application,
        doc: "what to group the processes by"
      },
      workers: %{}
    ],
    binaries_elsewhere: [:workers, :read_tables, :max_objects],
    leaks: [
      :mode,
      {:limit, %{default: 10, doc: "how many results"}},
      :candidates,
      :idle_ms,
      :workers
    ]
  }

  @doc false
  def metrics, do: @metrics
  @doc false
  def modes, do: @modes
  @doc false
  def basic_metrics, do: @basic_metrics

  @doc "The spec of option `name` as most calls take it."
  @spec option(atom()) :: spec()
  def option(name) do
    case Keyword.fetch!(@specs, name) do
      {type, :none, doc} -> %{type: type, doc: doc}
      {type, default, doc} -> %{type: type, default: default, doc: doc}
    end
  end

  @doc "The public calls that have a schema."
  @spec calls() :: [atom()]
  def calls, do: Map.keys(@calls)

  @doc "The schema of `call`: `[{name, spec}]`, in doc order, the target options last."
  @spec schema(atom()) :: [{atom(), spec()}]
  def schema(call) do
    own =
      for entry <- Map.fetch!(@calls, call) do
        {name, overrides} = if is_atom(entry), do: {entry, %{}}, else: entry
        base = if Keyword.has_key?(@specs, name), do: option(name), else: %{}
        {name, Map.merge(base, overrides)}
      end

    own ++ Enum.map(@target, &{&1, option(&1)})
  end

  @doc "The spec of option `name` of `call`."
  @spec spec(atom(), atom()) :: spec()
  def spec(call, name), do: call |> schema() |> List.keyfind!(name, 0) |> elem(1)

  @doc "The function name of `call`, as messages give it."
  @spec fun_name(atom()) :: String.t()
  def fun_name(:top), do: "Binscope.top/2"
  def fun_name(call), do: "Binscope.#{call}/1"

  @doc """
  Validates `opts` for `call` and returns them as a map, with every default of its schema
  filled in.
  """
  @spec validate!(atom(), term()) :: map()
  def validate!(call, opts) do
    fun = fun_name(call)
    schema = schema(call)
    map = Common.keyword!(opts, Enum.map(schema, &elem(&1, 0)), fun)

    if Map.has_key?(map, :node) and Map.has_key?(map, :nodes) do
      raise ArgumentError, "#{fun}: give either :node or :nodes, not both"
    end

    o =
      Enum.reduce(schema, %{}, fn {k, spec}, acc ->
        case map do
          %{^k => v} -> Map.put(acc, k, value!(k, v, spec.type, fun))
          _ when is_map_key(spec, :default) -> Map.put(acc, k, spec.default)
          _ -> acc
        end
      end)

    if Map.get(o, :detail) == :basic and Map.has_key?(o, :by) and o.by not in @basic_metrics do
      raise ArgumentError,
            "#{fun}: with detail: :basic, :by must be one of #{inspect(@basic_metrics)}"
    end

    o
  end

  defp value!(_k, n, {:int, lo, hi}, _fun) when is_integer(n) and n >= lo and n <= hi, do: n

  defp value!(k, v, {:one_of, values} = type, fun),
    do: if(v in values, do: v, else: bad(k, v, type, fun))

  defp value!(_k, :auto, {:auto_or_int, _, _}, _fun), do: :auto

  defp value!(_k, n, {:auto_or_int, lo, hi}, _fun) when is_integer(n) and n >= lo and n <= hi,
    do: n

  defp value!(_k, b, :boolean, _fun) when is_boolean(b), do: b
  defp value!(_k, n, :node, _fun) when is_atom(n) and n not in [nil, true, false], do: n
  defp value!(_k, :connected, :nodes, _fun), do: :connected

  defp value!(k, ns, :nodes, fun) when is_list(ns) and ns != [] do
    if Enum.all?(ns, &(is_atom(&1) and &1 not in [nil, true, false])),
      do: ns,
      else: bad(k, ns, :nodes, fun)
  end

  defp value!(k, ps, :pids, fun) when is_list(ps) do
    # Each pid once: a pid given twice would be two holders of its own binaries (USS 0, PSS
    # split between the copies).
    if Enum.all?(ps, &is_pid/1), do: Enum.uniq(ps), else: bad(k, ps, :pids, fun)
  end

  defp value!(k, v, type, fun), do: bad(k, v, type, fun)

  defp bad(key, v, type, fun) do
    raise ArgumentError,
          "#{fun}: #{inspect(key)} must be #{expected(type, :api)}, got: #{Common.short(v)}"
  end

  @doc """
  What a value of `type` must be, in words: `:api` as Elixir writes values (`1..3_600_000`,
  `:full`), `:cli` as a command line does (`1..3600000`, `full`).
  """
  @spec expected(type(), :api | :cli) :: String.t()
  def expected({:int, lo, hi}, style), do: "an integer in #{num(lo, style)}..#{num(hi, style)}"
  def expected({:auto_or_int, lo, hi}, :api), do: ":auto or " <> expected({:int, lo, hi}, :api)
  def expected({:auto_or_int, lo, hi}, :cli), do: expected({:int, lo, hi}, :cli)
  def expected({:one_of, [a, b]}, :api), do: "#{inspect(a)} or #{inspect(b)}"
  def expected({:one_of, values}, :api), do: "one of #{inspect(values)}"

  def expected({:one_of, values}, :cli),
    do: "one of: " <> (values |> Enum.map(&Atom.to_string/1) |> Enum.sort() |> Enum.join(", "))

  def expected(:boolean, _), do: "a boolean"
  def expected(:node, _), do: "a node name (atom)"
  def expected(:nodes, _), do: "a non-empty list of node names or :connected"
  def expected(:pids, _), do: "a list of pids"

  @doc "An integer as `style` writes it: `30_000` (`:api`) or `30000` (`:cli`)."
  @spec num(integer(), :api | :cli) :: String.t()
  def num(n, :cli), do: Integer.to_string(n)
  def num(n, :api) when abs(n) < 10_000, do: Integer.to_string(n)

  def num(n, :api) do
    digits = n |> abs() |> Integer.to_string() |> String.reverse()
    grouped = digits |> String.graphemes() |> Enum.chunk_every(3) |> Enum.join("_")
    if(n < 0, do: "-", else: "") <> String.reverse(grouped)
  end

  @doc """
  The option docs of `call`, a markdown list for its `@doc`: one line per option with its doc
  line, what it takes and its default.
  """
  @spec doc(atom()) :: String.t()
  def doc(call) do
    lines =
      for {k, spec} <- schema(call) do
        default = if Map.has_key?(spec, :default), do: ", default `#{inspect_default(spec)}`"

        "  * `#{k}:` - #{refs(spec.doc, :api)} (#{short_type(spec.type)}#{default})"
      end

    "Options:\n\n" <> Enum.join(lines, "\n") <> "\n"
  end

  @doc "The default of option `name` of `call` as the docs write it (`30_000`, `:memory`)."
  @spec default_text(atom(), atom()) :: String.t()
  def default_text(call, name), do: inspect_default(spec(call, name))

  defp inspect_default(%{default: d}) when is_integer(d), do: num(d, :api)
  defp inspect_default(%{default: d}), do: inspect(d)

  defp short_type({:int, lo, hi}), do: "#{num(lo, :api)}..#{num(hi, :api)}"
  defp short_type({:auto_or_int, lo, hi}), do: "`:auto` or #{num(lo, :api)}..#{num(hi, :api)}"

  defp short_type({:one_of, values}),
    do: values |> Enum.map(&"`#{inspect(&1)}`") |> Enum.join(", ")

  defp short_type(:boolean), do: "a boolean"
  defp short_type(:node), do: "a node name"
  defp short_type(:nodes), do: "a list of node names, or `:connected`"
  defp short_type(:pids), do: "a list of pids"

  @doc "A doc line with its `{name}` references written for `style` (`name:` or `--name`)."
  @spec refs(String.t(), :api | :cli) :: String.t()
  def refs(text, style) do
    Regex.replace(~r/\{([a-z_]+)\}/, text, fn _, name ->
      case style do
        :api -> "`#{name}:`"
        :cli -> "--" <> String.replace(name, "_", "-")
      end
    end)
  end
end
