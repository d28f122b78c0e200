defmodule Binscope.CLI do
  @moduledoc """
  The command line behind `mix binscope.memory`, `mix binscope.top` and `mix binscope.leaks`.

  `parse/2` is pure: it validates the arguments and creates no atom (node names and cookies
  stay strings until `Binscope.CLI.Connect` uses them). `run/2` parses, connects when `--node`
  is given, runs the report with progress on stderr, and prints it; it returns the exit status.
  """

  alias Binscope.Accounting.Options
  alias Binscope.CLI.Connect
  alias Binscope.Render

  # --cookie is taken out of argv before OptionParser sees it (see take_cookie/1), so no
  # message about another argument can ever quote it.
  @common [
    node: :string,
    cookie_file: :string,
    format: :string,
    timeout: :integer,
    help: :boolean
  ]
  @switches %{
    memory: @common,
    top:
      @common ++
        [limit: :integer, by: :string, detail: :string, workers: :integer, window: :integer] ++
        [watch: :integer, count: :integer],
    leaks:
      @common ++
        [
          limit: :integer,
          mode: :string,
          candidates: :integer,
          idle_ms: :integer,
          workers: :integer
        ]
  }
  @formats %{"table" => :table, "json" => :json, "csv" => :csv}
  @metrics Map.new(Options.metrics(), &{Atom.to_string(&1), &1})
  @basic_metrics Map.new(Options.basic_metrics(), &{Atom.to_string(&1), &1})
  @modes Map.new(Options.modes(), &{Atom.to_string(&1), &1})
  @details %{"full" => :full, "basic" => :basic}
  # Integer options: {min, max}.
  @ranges %{
    limit: {1, 1_000_000},
    candidates: {1, 1_000_000},
    timeout: {1, 3_600_000},
    workers: {1, 1024},
    idle_ms: {0, 60_000},
    window: {1, 3_600_000},
    watch: {1, 86_400},
    count: {1, 1_000_000}
  }
  @default_timeout 30_000

  @common_help """
  Options:

      --node NAME          inspect NAME (name@host); connects as a hidden node. Without it the
                           tasks inspect this mix VM itself, not your application.
                           The target needs no Binscope installed: the OTP-only collector is loaded
                           onto it for the scan.
      --cookie-file F      read the target's cookie from F (a release keeps it in releases/COOKIE)
      BINSCOPE_COOKIE      (environment variable) the cookie, when --cookie-file is not given
      --cookie C           the cookie on the command line. WARNING: other users of this machine
                           can read it (ps, /proc/PID/cmdline) while the task runs; prefer
                           --cookie-file or BINSCOPE_COOKIE.
                           With none of these: ~/.erlang.cookie, as OTP does. The cookie is never
                           printed. A cookie is 1 to 255 printable ASCII characters.
      --format FMT         table (default), json or csv
      --timeout MS         give up after MS milliseconds, connection included (1..3600000,
                           default 30000)
      --help               this text

  Progress goes to stderr every second while a scan runs; the report goes to stdout.
  """

  @doc "The options every task takes, as its `--help` shows them."
  @spec common_help() :: String.t()
  def common_help, do: @common_help

  @typedoc "A report kind."
  @type task :: :memory | :top | :leaks

  @doc """
  Parses `argv` for `task`: `{:ok, opts}`, `:help`, or `{:error, message}`. Messages name the
  valid values and never quote a cookie. A cookie given with `--cookie` is kept in `opts` as a
  function returning it (so printing `opts` does not show it).

      iex> Binscope.CLI.parse(:top, ["--limit", "5", "--by", "binary_pss"])
      {:ok, %{format: :table, limit: 5, by: :binary_pss, timeout: 30000}}
      iex> Binscope.CLI.parse(:top, ["--limit", "0"])
      {:error, "--limit must be an integer in 1..1000000, got: 0"}
      iex> Binscope.CLI.parse(:top, ["--by", "nonsense"])
      {:error, ~s(--by must be one of: bin_old_vheap_size, bin_vheap_size, binary_bytes, binary_pss, binary_refs, binary_uss, heap_size, memory, message_queue_len, minor_gcs, native_bytes, native_store_bytes, old_heap_size, reductions, stack_size, total_heap_size; got: "nonsense")}
  """
  @spec parse(task(), [String.t()]) :: {:ok, map()} | :help | {:error, String.t()}
  def parse(task, argv) when task in [:memory, :top, :leaks] and is_list(argv) do
    if Enum.all?(argv, &is_binary/1) do
      with {:ok, argv, cookie} <- take_cookie(argv, [], nil), do: do_parse(task, argv, cookie)
    else
      {:error, "arguments must be strings"}
    end
  end

  # Removes `--cookie VALUE` / `--cookie=VALUE` (whatever VALUE looks like, even `--x`).
  defp take_cookie([], acc, cookie), do: {:ok, Enum.reverse(acc), cookie}
  defp take_cookie(["--cookie"], _acc, _), do: {:error, "--cookie needs a value"}

  defp take_cookie(["--cookie", c | rest], acc, nil), do: take_cookie(rest, acc, {:given, c})
  defp take_cookie(["--cookie=" <> c | rest], acc, nil), do: take_cookie(rest, acc, {:given, c})

  defp take_cookie([arg | _], _acc, {:given, _}) when arg == "--cookie",
    do: {:error, "give --cookie once"}

  defp take_cookie(["--cookie=" <> _ | _], _acc, {:given, _}), do: {:error, "give --cookie once"}
  defp take_cookie([arg | rest], acc, cookie), do: take_cookie(rest, [arg | acc], cookie)

  defp do_parse(task, argv, cookie) do
    switches = Map.fetch!(@switches, task)

    # --help wins over anything else on the line.
    case if("--help" in argv, do: :help, else: OptionParser.parse(argv, strict: switches)) do
      :help ->
        :help

      {parsed, [], []} ->
        validate(task, parsed, cookie)

      {_, _, [{switch, value} | _]} ->
        invalid(task, switches, switch, value)

      {_, [extra | _], []} ->
        {:error,
         "unexpected argument #{quote_arg(extra)}; binscope.#{task} takes only options: " <>
           options_list(task)}
    end
  end

  # OptionParser's verdict on one switch: unknown, missing value, or a value of the wrong type.
  defp invalid(task, switches, switch, value) do
    key = switch |> String.trim_leading("-") |> String.replace("-", "_")

    case Enum.find(switches, fn {k, _} -> Atom.to_string(k) == key end) do
      nil ->
        {:error,
         "unknown option #{quote_switch(switch)}; binscope.#{task} takes: " <>
           options_list(task)}

      {:help, _} ->
        {:error, "--help takes no value"}

      {k, _} when value == nil ->
        {:error, "#{flag(k)} needs a value (#{expected(k)})"}

      {k, _} ->
        {:error, "#{flag(k)} must be #{expected(k)}, got: #{quote_arg(value)}"}
    end
  end

  defp options_list(task) do
    flags = @switches |> Map.fetch!(task) |> Keyword.keys() |> Enum.map(&flag/1)
    flags |> List.insert_at(2, "--cookie") |> Enum.join(", ")
  end

  defp flag(k), do: "--" <> String.replace(Atom.to_string(k), "_", "-")

  defp expected(k) when is_map_key(@ranges, k) do
    {lo, hi} = Map.fetch!(@ranges, k)
    "an integer in #{lo}..#{hi}"
  end

  defp expected(:format), do: one_of(@formats)
  defp expected(:by), do: one_of(@metrics)
  defp expected(:mode), do: one_of(@modes)
  defp expected(:detail), do: one_of(@details)
  defp expected(:node), do: "a node name, name@host"
  defp expected(:cookie_file), do: "a file name"

  defp one_of(table), do: "one of: " <> (table |> Map.keys() |> Enum.sort() |> Enum.join(", "))

  # An argument quoted in a message: printable, at most 40 characters.
  @doc false
  # Also used by the lab's `mix binscope.demo` (Binscope.Demo.parse_argv/1).
  def quote_arg(arg) do
    short = if String.length(arg) > 40, do: String.slice(arg, 0, 40) <> "...", else: arg
    inspect(short, printable_limit: 60, binaries: :as_strings)
  end

  @doc false
  def quote_switch(switch) do
    if Regex.match?(~r/\A--?[A-Za-z0-9_-]{1,40}\z/, switch), do: switch, else: quote_arg(switch)
  end

  defp validate(task, parsed, cookie) do
    init = %{format: :table, timeout: @default_timeout}

    parsed
    |> Enum.reduce_while({:ok, init}, fn {k, v}, {:ok, acc} ->
      case value(k, v) do
        {:ok, v} -> {:cont, {:ok, Map.put(acc, k, v)}}
        {:error, msg} -> {:halt, {:error, msg}}
      end
    end)
    |> with_cookie(cookie)
    |> combination(task)
  end

  defp with_cookie({:ok, o}, nil), do: {:ok, o}

  defp with_cookie({:ok, o}, {:given, c}) do
    case check_cookie(c, "--cookie") do
      :ok -> {:ok, Map.put(o, :cookie, fn -> c end)}
      error -> error
    end
  end

  defp with_cookie(error, _), do: error

  # Combinations that cannot work, said before anything runs.
  defp combination({:ok, o}, task) do
    cond do
      Map.has_key?(o, :cookie) and Map.has_key?(o, :cookie_file) ->
        {:error, "give --cookie or --cookie-file, not both"}

      Map.has_key?(o, :cookie) and not Map.has_key?(o, :node) ->
        {:error, "--cookie needs --node (the cookie is the target node's)"}

      Map.has_key?(o, :cookie_file) and not Map.has_key?(o, :node) ->
        {:error, "--cookie-file needs --node (the cookie is the target node's)"}

      task == :top and Map.get(o, :detail) == :basic and
          not Map.has_key?(@basic_metrics, Atom.to_string(Map.get(o, :by, :memory))) ->
        {:error,
         "--detail basic collects only #{o.by |> Atom.to_string() |> then(fn _ -> "" end)}" <>
           "some figures: with it, --by must be #{one_of(@basic_metrics)}; got: #{o.by}"}

      task == :leaks and Map.has_key?(o, :candidates) and
          Map.get(o, :mode, :targeted) != :targeted ->
        {:error, "--candidates applies to --mode targeted only (got --mode #{o.mode})"}

      task == :leaks and Map.has_key?(o, :idle_ms) and Map.get(o, :mode) == :full ->
        {:error, "--idle-ms applies to --mode targeted and dry_run only (got --mode full)"}

      true ->
        {:ok, o}
    end
  end

  defp combination(error, _task), do: error

  @doc """
  Checks a cookie from `source` (`"--cookie"`, a file, `BINSCOPE_COOKIE`): `:ok` or
  `{:error, message}`. A cookie is 1 to 255 printable ASCII characters (what OTP itself takes
  from `~/.erlang.cookie`, and what fits in an atom). The message never quotes the cookie.
  """
  @spec check_cookie(binary(), String.t()) :: :ok | {:error, String.t()}
  def check_cookie(c, source) do
    rule = "a cookie is 1 to 255 printable ASCII characters"

    cond do
      c == "" ->
        {:error, "the cookie from #{source} is empty; #{rule}"}

      byte_size(c) > 255 ->
        {:error, "the cookie from #{source} is #{byte_size(c)} bytes long; #{rule}"}

      not printable_ascii?(c) ->
        {:error,
         "the cookie from #{source} holds a character that is not printable ASCII; #{rule}"}

      true ->
        :ok
    end
  end

  defp printable_ascii?(<<>>), do: true
  defp printable_ascii?(<<b, rest::binary>>) when b in 0x20..0x7E, do: printable_ascii?(rest)
  defp printable_ascii?(_), do: false

  # Node names become atoms once connecting (at most 255 characters).
  defp value(:node, n) do
    if byte_size(n) <= 255 and
         Regex.match?(~r/\A[A-Za-z0-9_.+-]{1,200}@[A-Za-z0-9_.-]{1,200}\z/, n),
       do: {:ok, n},
       else:
         {:error,
          "--node must be a node name, name@host (letters, digits, _ . + -; at most 255 characters)"}
  end

  defp value(:cookie_file, f) when byte_size(f) in 1..4096, do: {:ok, f}
  defp value(:cookie_file, _), do: {:error, "--cookie-file must be a file name (1 to 4096 bytes)"}
  defp value(:format, f), do: lookup(@formats, f, "--format")
  defp value(:by, m), do: lookup(@metrics, m, "--by")
  defp value(:mode, m), do: lookup(@modes, m, "--mode")
  defp value(:detail, d), do: lookup(@details, d, "--detail")
  defp value(:help, h), do: {:ok, h}

  defp value(k, n) when is_map_key(@ranges, k) do
    {lo, hi} = Map.fetch!(@ranges, k)

    if n >= lo and n <= hi,
      do: {:ok, n},
      else: {:error, "#{flag(k)} must be #{expected(k)}, got: #{short_int(n)}"}
  end

  defp short_int(n) do
    s = Integer.to_string(n)
    if byte_size(s) > 24, do: binary_part(s, 0, 20) <> "...", else: s
  end

  defp lookup(table, key, switch) do
    case Map.fetch(table, key) do
      {:ok, v} -> {:ok, v}
      :error -> {:error, "#{switch} must be #{one_of(table)}; got: #{quote_arg(key)}"}
    end
  end

  @doc """
  The mix tasks' entry point: builds and loads the NIF, runs `task` and exits with its status
  when it is not 0.
  """
  @spec main(task(), [String.t()], String.t()) :: :ok
  def main(task, argv, help_text) do
    Mix.Task.run("compile")
    Code.ensure_loaded!(Binscope.Native)

    case run(task, argv, help_text) do
      0 -> :ok
      status -> exit({:shutdown, status})
    end
  end

  @doc """
  Runs `task` with `argv`, printing the report on stdout and progress and errors on stderr.
  Returns the exit status (0 on success).
  """
  @spec run(task(), [String.t()], String.t()) :: non_neg_integer()
  def run(task, argv, help_text) do
    case parse(task, argv) do
      :help ->
        IO.write(help_text)
        0

      {:ok, opts} ->
        safely(opts, fn -> run_parsed(task, opts) end)

      {:error, msg} ->
        fail(msg)
    end
  end

  # `--timeout` bounds the whole run: connecting, then the scan with what is left.
  defp run_parsed(task, opts) do
    deadline = Binscope.Remote.deadline(opts.timeout)

    with {:ok, target} <- Connect.target(opts, deadline),
         :ok <- say_target(task, target, opts),
         # --watch: the watcher redraws until --count or ^C, each round with its own --timeout.
         :once <- Binscope.Memory.Watch.maybe_watch(task, target, opts),
         left when left > 0 <- Binscope.Remote.left(deadline),
         opts = %{opts | timeout: left},
         {:ok, report} <- with_progress(task, target, fn -> report(task, target, opts) end) do
      IO.write(Render.render(task, report, opts.format, node: target))
      0
    else
      {:watched, status} -> status
      0 -> fail(Render.reason(:timeout))
      {:error, msg} when is_binary(msg) -> fail(msg)
      {:error, reason} -> fail(Render.reason(reason))
    end
  end

  defp fail(msg) do
    IO.puts(:stderr, "error: " <> msg)
    1
  end

  # Nothing a user types may end in a stack trace, and none may print the cookie: an unexpected
  # exception becomes one `error:` line, naming only its kind when a cookie was given.
  defp safely(opts, fun) do
    fun.()
  rescue
    e ->
      detail =
        if Map.has_key?(opts, :cookie) or Map.has_key?(opts, :cookie_file) or
             System.get_env("BINSCOPE_COOKIE") do
          inspect(e.__struct__)
        else
          e |> Exception.message() |> String.split("\n") |> hd() |> String.slice(0, 200)
        end

      fail("internal error (#{detail}); please report it")
  end

  # Which node is inspected, on stderr: without --node it is this mix VM, which is rarely what
  # a user means.
  defp say_target(task, target, opts) do
    unless Map.has_key?(opts, :node) do
      IO.puts(
        :stderr,
        "binscope: #{task} of this mix VM (#{target}); --node NAME inspects another node"
      )
    end

    :ok
  end

  defp report(:memory, node, o), do: Binscope.memory(node: node, timeout: o.timeout)

  defp report(:top, node, o) do
    opts =
      [node: node, by: Map.get(o, :by, :memory), timeout: o.timeout] ++
        Enum.to_list(Map.take(o, [:detail, :workers, :window]))

    Binscope.top(Map.get(o, :limit, 20), opts)
  end

  defp report(:leaks, node, o) do
    opts =
      [node: node, timeout: o.timeout] ++
        Enum.filter(Map.take(o, [:limit, :mode, :candidates, :idle_ms, :workers]), &elem(&1, 1))

    Binscope.leaks(opts)
  end

  # Scans of large nodes take seconds: say so every second on stderr (never on stdout, which
  # carries the report and may be piped into a JSON or CSV consumer).
  defp with_progress(task, node, fun) do
    start = System.monotonic_time(:millisecond)

    ticker =
      spawn_link(fn ->
        Stream.interval(1_000)
        |> Enum.each(fn _ ->
          s = div(System.monotonic_time(:millisecond) - start, 1000)
          IO.puts(:stderr, "binscope: #{task} on #{node}: #{s} s...")
        end)
      end)

    try do
      fun.()
    after
      Process.unlink(ticker)
      Process.exit(ticker, :kill)
    end
  end
end
