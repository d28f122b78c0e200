defmodule Binscope.CLI.Options do
  @moduledoc """
  The mix tasks' options, derived from the API's schema (`Binscope.Accounting.Options`): each
  task's OptionParser switches, the checks of their values and the `--help` text come from one
  list per task, so a range, a default or a doc line is written once.

  A flag that maps onto an API option (`--by` onto `by:`) takes that option's type, range,
  default and doc line; the options only the command line has (`--format`, `--cookie-file`,
  `--watch`, ...) are specified here in the same form.
  """

  alias Binscope.Accounting.Options, as: API

  @node_doc "inspect NAME (name@host); connects as a hidden node. Without it the tasks " <>
              "inspect this mix VM itself, not your application. The target needs no " <>
              "Binscope installed: the OTP-only collector is loaded onto it for the scan."

  # The options only the command line has. `:cookie` is taken out of argv before OptionParser
  # sees it (see Binscope.CLI.Parse), and `:cookie_env` is no flag but the environment
  # variable, listed with the other cookie sources.
  @cli_specs %{
    node: %{type: :node_name, arg: "NAME", doc: @node_doc},
    cookie_file: %{
      type: :file,
      arg: "F",
      doc: "read the target's cookie from F (a release keeps it in releases/COOKIE)"
    },
    cookie_env: %{
      type: :env,
      flag: "BINSCOPE_COOKIE",
      doc: "(environment variable) the cookie, when --cookie-file is not given"
    },
    cookie: %{
      type: :cookie,
      arg: "C",
      doc:
        "the cookie on the command line. WARNING: other users of this machine can read it " <>
          "(ps, /proc/PID/cmdline) while the task runs; prefer --cookie-file or " <>
          "BINSCOPE_COOKIE. With none of these: ~/.erlang.cookie, as OTP does. The cookie " <>
          "is never printed. A cookie is 1 to 255 printable ASCII characters."
    },
    format: %{
      type: {:one_of, [:table, :json, :csv]},
      default: :table,
      arg: "FMT",
      doc: "the report's form"
    },
    help: %{type: :help, doc: "this text"},
    watch: %{
      type: {:int, 1, 86_400},
      arg: "SECONDS",
      doc:
        "refresh every SECONDS like top, ranked by growth over the last interval; redraws " <>
          "in place on a terminal, appends otherwise"
    },
    count: %{type: {:int, 1, 1_000_000}, arg: "N", doc: "with {watch}: stop after N refreshes"}
  }

  # The metavariable of each API option in the help.
  @args %{
    timeout: "MS",
    limit: "N",
    by: "METRIC",
    detail: "LEVEL",
    workers: "N",
    window: "MS",
    mode: "MODE",
    candidates: "K",
    idle_ms: "MS"
  }

  @common [:node, :cookie_file, :cookie_env, :cookie, :format, :timeout, :help]
  # Each task's own flags, in help order: a name, or `{name, overrides}`. `--limit` of top is
  # `Binscope.top/2`'s `n`, which has no default of its own.
  @tasks %{
    memory: [],
    top: [
      {:limit, %{default: 20, doc: "rows"}},
      :by,
      :detail,
      :workers,
      :window,
      :watch,
      :count
    ],
    leaks: [:mode, {:limit, %{doc: "results"}}, :candidates, :idle_ms, :workers]
  }

  @typedoc "A report kind."
  @type task :: :memory | :top | :leaks

  @doc "Every flag of `task` with its spec, in help order (the task's own first)."
  @spec schema(task()) :: [{atom(), map()}]
  def schema(task) do
    for entry <- Map.fetch!(@tasks, task) ++ @common do
      {name, overrides} = if is_atom(entry), do: {entry, %{}}, else: entry
      {name, Map.merge(base(task, name), overrides)}
    end
  end

  # A flag of the command line only, or the API option of the task's call (an option that call
  # does not take, like top's --limit, from the options every call shares).
  defp base(_task, name) when is_map_key(@cli_specs, name), do: Map.fetch!(@cli_specs, name)

  defp base(task, name) do
    spec =
      case List.keyfind(API.schema(task), name, 0) do
        {^name, spec} -> spec
        nil -> API.option(name)
      end

    spec = if spec.type == :node, do: %{spec | type: :node_name}, else: spec
    Map.put(spec, :arg, Map.fetch!(@args, name))
  end

  @doc "The spec of flag `name` of `task`."
  @spec spec(task(), atom()) :: map()
  def spec(task, name), do: task |> schema() |> List.keyfind!(name, 0) |> elem(1)

  @doc "The default of flag `name` of `task`, or `nil`."
  @spec default(task(), atom()) :: term()
  def default(task, name), do: Map.get(spec(task, name), :default)

  @doc "OptionParser's `strict:` switches of `task` (`--cookie` is taken out before it runs)."
  @spec switches(task()) :: keyword()
  def switches(task) do
    for {name, spec} <- schema(task), type = switch_type(spec.type), do: {name, type}
  end

  defp switch_type({:int, _, _}), do: :integer
  defp switch_type({:auto_or_int, _, _}), do: :integer
  defp switch_type({:one_of, _}), do: :string
  defp switch_type(:node_name), do: :string
  defp switch_type(:file), do: :string
  defp switch_type(:help), do: :boolean
  defp switch_type(_taken_out_or_env), do: nil

  @doc "Every flag `task` takes, as its error messages list them (those of every task first)."
  @spec flags(task()) :: [String.t()]
  def flags(task) do
    {common, own} = task |> schema() |> Enum.split_with(fn {name, _} -> name in @common end)
    for {name, spec} <- common ++ own, spec.type != :env, do: flag(name)
  end

  @doc "`:idle_ms` as a flag: `--idle-ms`."
  @spec flag(atom()) :: String.t()
  def flag(name), do: "--" <> String.replace(Atom.to_string(name), "_", "-")

  @doc "What flag `name` of `task` must be, in words."
  @spec expected(task(), atom()) :: String.t()
  def expected(task, name) do
    case spec(task, name).type do
      :node_name -> "a node name, name@host"
      :file -> "a file name"
      type -> API.expected(type, :cli)
    end
  end

  @doc """
  The value of flag `name` as OptionParser gave it, checked against its spec: `{:ok, value}`
  (an enum value becomes its atom, found among the existing ones) or `{:error, message}`.
  """
  @spec value(task(), atom(), term()) :: {:ok, term()} | {:error, String.t()}
  def value(task, name, v) do
    case spec(task, name).type do
      {:int, lo, hi} -> int(task, name, v, lo, hi)
      {:auto_or_int, lo, hi} -> int(task, name, v, lo, hi)
      {:one_of, values} -> lookup(task, name, values, v)
      :node_name -> node_name(v)
      :file when byte_size(v) in 1..4096 -> {:ok, v}
      :file -> {:error, "#{flag(name)} must be a file name (1 to 4096 bytes)"}
      :help -> {:ok, v}
    end
  end

  defp int(_task, _name, n, lo, hi) when n >= lo and n <= hi, do: {:ok, n}

  defp int(task, name, n, _lo, _hi),
    do: {:error, "#{flag(name)} must be #{expected(task, name)}, got: #{short_int(n)}"}

  defp short_int(n) do
    s = Integer.to_string(n)
    if byte_size(s) > 24, do: binary_part(s, 0, 20) <> "...", else: s
  end

  # Node names become atoms once connecting (at most 255 characters).
  defp node_name(n) do
    if byte_size(n) <= 255 and
         Regex.match?(~r/\A[A-Za-z0-9_.+-]{1,200}@[A-Za-z0-9_.-]{1,200}\z/, n),
       do: {:ok, n},
       else:
         {:error,
          "--node must be a node name, name@host (letters, digits, _ . + -; at most 255 characters)"}
  end

  defp lookup(task, name, values, key) do
    case Enum.find(values, &(Atom.to_string(&1) == key)) do
      nil ->
        {:error,
         "#{flag(name)} must be #{expected(task, name)}; got: #{Binscope.CLI.Parse.quote_arg(key)}"}

      v ->
        {:ok, v}
    end
  end

  @width 80
  @flag_column 27

  @doc """
  The options part of `task`'s `--help` (and of `mix help binscope.TASK`): one line per flag,
  at most #{@width} columns, its doc, what it takes and its default.
  """
  @spec help(task()) :: String.t()
  def help(task) do
    own = for {name, _} = entry <- schema(task), name not in @common, do: line(entry)
    common = Enum.map(schema(task), &line/1) |> Enum.drop(length(own))
    common_part = Enum.join(common) <> "\n" <> notes()

    if own == [],
      do: "Options:\n\n" <> common_part,
      else: "Options:\n\n" <> Enum.join(own) <> "\nOptions of every task:\n\n" <> common_part
  end

  @doc "The options every task takes, as its `--help` shows them."
  @spec common_help() :: String.t()
  def common_help,
    do: "Options:\n\n" <> Enum.join(Enum.map(schema(:memory), &line/1)) <> "\n" <> notes()

  defp notes do
    "Progress goes to stderr every second while a scan runs; the report goes to\nstdout.\n"
  end

  defp line({name, spec}) do
    head =
      Map.get(spec, :flag) || Enum.join(Enum.reject([flag(name), spec[:arg]], &is_nil/1), " ")

    text = API.refs(spec.doc, :cli) <> takes(spec)
    [first | rest] = wrap(text, @width - @flag_column)
    pad = String.duplicate(" ", @flag_column)
    first_line = String.pad_trailing("    " <> head, @flag_column - 1) <> " " <> first

    [first_line, "\n" | Enum.map(rest, &[pad, &1, "\n"])]
    |> IO.iodata_to_binary()
  end

  defp takes(spec) do
    default = if Map.has_key?(spec, :default), do: "default #{default_text(spec.default)}"

    range =
      case spec.type do
        {:int, lo, hi} -> "#{lo}..#{hi}"
        {:auto_or_int, lo, hi} -> "#{lo}..#{hi}"
        {:one_of, values} -> values |> Enum.map(&Atom.to_string/1) |> Enum.join(", ")
        _ -> nil
      end

    case Enum.reject([range, default], &is_nil/1) do
      [] -> ""
      parts -> " (" <> Enum.join(parts, "; ") <> ")"
    end
  end

  # `--workers` on the command line takes an integer; its API default `:auto` is what the
  # option's doc says it means.
  defp default_text(:auto), do: "auto"
  defp default_text(d) when is_atom(d), do: Atom.to_string(d)
  defp default_text(d), do: to_string(d)

  defp wrap(text, width) do
    text
    |> String.split(" ", trim: true)
    |> Enum.reduce([], fn
      word, [] ->
        [word]

      word, [cur | done] ->
        if String.length(cur) + 1 + String.length(word) <= width,
          do: [cur <> " " <> word | done],
          else: [word, cur | done]
    end)
    |> Enum.reverse()
  end
end
