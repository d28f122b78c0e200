defmodule Binscope.CLI do
  @moduledoc """
  The command line behind `mix binscope.memory`, `mix binscope.top` and `mix binscope.leaks`.

  `parse/2` is pure: it validates the arguments and creates no atom (node names and cookies
  stay strings until `Binscope.CLI.Connect` uses them). `run/2` parses, connects when `--node`
  is given, runs the report with progress on stderr, and prints it; it returns the exit status.
  """

  alias Binscope.Accounting.Options
  alias Binscope.CLI.{Connect, Output}

  @common [
    node: :string,
    cookie: :string,
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
  @modes Map.new(Options.modes(), &{Atom.to_string(&1), &1})
  @details %{"full" => :full, "basic" => :basic}

  @common_help """
  Options:

    --node NAME          inspect NAME (name@host) instead of this VM; connects as a hidden node.
                         The target needs no Binscope installed: the OTP-only collector is loaded
                         onto it for the scan.
    --cookie C           the target's cookie (never printed), or
    --cookie-file F      read it from F (default: ~/.erlang.cookie, as OTP does)
    --format FMT         table (default), json or csv
    --timeout MS         give up on the node after MS milliseconds (default 30000)
    --help               this text

  Progress goes to stderr every second while a scan runs; the report goes to stdout.
  """

  @doc "The options every task takes, as its `--help` shows them."
  @spec common_help() :: String.t()
  def common_help, do: @common_help

  @typedoc "A report kind."
  @type task :: :memory | :top | :leaks

  @doc """
  Parses `argv` for `task`: `{:ok, opts}`, `:help`, or `{:error, message}`.

      iex> Binscope.CLI.parse(:top, ["--limit", "5", "--by", "binary_pss"])
      {:ok, %{format: :table, limit: 5, by: :binary_pss, timeout: 30000}}
      iex> Binscope.CLI.parse(:top, ["--by", "nonsense"])
      {:error, "--by must be one of: bin_old_vheap_size, bin_vheap_size, binary_bytes, binary_pss, binary_refs, binary_uss, heap_size, memory, message_queue_len, minor_gcs, native_bytes, native_store_bytes, old_heap_size, reductions, stack_size, total_heap_size"}
  """
  @spec parse(task(), [String.t()]) :: {:ok, map()} | :help | {:error, String.t()}
  def parse(task, argv) when task in [:memory, :top, :leaks] and is_list(argv) do
    if Enum.all?(argv, &is_binary/1) do
      do_parse(task, argv)
    else
      {:error, "arguments must be strings"}
    end
  end

  defp do_parse(task, argv) do
    case OptionParser.parse(argv, strict: Map.fetch!(@switches, task)) do
      {parsed, [], []} ->
        if parsed[:help], do: :help, else: validate(parsed)

      {_, _, [{switch, nil} | _]} ->
        {:error, "unknown option #{switch}"}

      {_, _, [{switch, value} | _]} ->
        {:error, "bad value #{inspect(value)} for #{switch}"}

      {_, [extra | _], []} ->
        {:error, "unexpected argument #{inspect(extra)}"}
    end
  end

  defp validate(parsed) do
    Enum.reduce_while(parsed, {:ok, %{format: :table, timeout: 30_000}}, fn {k, v}, {:ok, acc} ->
      case value(k, v) do
        {:ok, v} -> {:cont, {:ok, Map.put(acc, k, v)}}
        {:error, msg} -> {:halt, {:error, msg}}
      end
    end)
    |> case do
      {:ok, %{cookie: _, cookie_file: _}} ->
        {:error, "give --cookie or --cookie-file, not both"}

      {:ok, %{cookie: _} = o} when not is_map_key(o, :node) ->
        {:error, "--cookie needs --node"}

      {:ok, %{cookie_file: _} = o} when not is_map_key(o, :node) ->
        {:error, "--cookie-file needs --node"}

      other ->
        other
    end
  end

  defp value(:node, n) do
    if Regex.match?(~r/\A[A-Za-z0-9_.+-]{1,200}@[A-Za-z0-9_.-]{1,200}\z/, n),
      do: {:ok, n},
      else: {:error, "--node must look like name@host"}
  end

  defp value(:cookie, c) when byte_size(c) in 1..255, do: {:ok, c}
  defp value(:cookie, _), do: {:error, "--cookie must be 1 to 255 bytes"}
  defp value(:cookie_file, f) when byte_size(f) in 1..4096, do: {:ok, f}
  defp value(:cookie_file, _), do: {:error, "--cookie-file must be a path"}
  defp value(:format, f), do: lookup(@formats, f, "--format")
  defp value(:by, m), do: lookup(@metrics, m, "--by")
  defp value(:mode, m), do: lookup(@modes, m, "--mode")
  defp value(:detail, d), do: lookup(@details, d, "--detail")
  defp value(k, n) when k in [:limit, :candidates] and n > 0 and n <= 1_000_000, do: {:ok, n}
  defp value(:timeout, n) when n > 0 and n <= 3_600_000, do: {:ok, n}
  defp value(:workers, n) when n > 0 and n <= 1024, do: {:ok, n}
  defp value(:window, n) when n > 0 and n <= 3_600_000, do: {:ok, n}
  defp value(:watch, n) when n > 0 and n <= 86_400, do: {:ok, n}
  defp value(:count, n) when n > 0 and n <= 1_000_000, do: {:ok, n}
  defp value(:idle_ms, n) when n >= 0 and n <= 60_000, do: {:ok, n}

  defp value(k, _),
    do: {:error, "--#{String.replace(Atom.to_string(k), "_", "-")} is out of range"}

  defp lookup(table, key, switch) do
    case Map.fetch(table, key) do
      {:ok, v} ->
        {:ok, v}

      :error ->
        {:error,
         "#{switch} must be one of: #{table |> Map.keys() |> Enum.sort() |> Enum.join(", ")}"}
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
    with {:ok, opts} <- parse(task, argv),
         {:ok, target} <- Connect.target(opts),
         :once <- Binscope.Memory.Watch.maybe_watch(task, target, opts),
         {:ok, report} <- with_progress(task, target, fn -> report(task, target, opts) end) do
      IO.write(Output.render(task, report, opts.format))
      0
    else
      :help ->
        IO.write(help_text)
        0

      {:watched, status} ->
        status

      {:error, msg} when is_binary(msg) ->
        IO.puts(:stderr, "error: " <> msg)
        1

      {:error, reason} ->
        IO.puts(:stderr, "error: " <> Output.reason(reason))
        1
    end
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
