defmodule Binscope.CLI do
  @moduledoc """
  The command line behind `mix binscope.memory`, `mix binscope.top` and `mix binscope.leaks`.

  `parse/2` is pure: it validates the arguments and creates no atom (node names and cookies
  stay strings until `Binscope.CLI.Connect` uses them). `run/2` parses, connects when `--node`
  is given, runs the report with progress on stderr, and prints it; it returns the exit status.
  """

  alias Binscope.CLI.{Connect, Options, Parse}
  alias Binscope.Render

  @doc "The options every task takes, as its `--help` shows them."
  @spec common_help() :: String.t()
  defdelegate common_help, to: Options

  @doc "The options part of `task`'s `--help` (see `Binscope.CLI.Options.help/1`)."
  @spec help(task()) :: String.t()
  defdelegate help(task), to: Options

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
  defdelegate parse(task, argv), to: Parse

  @doc """
  Checks a cookie from `source` (`"--cookie"`, a file, `BINSCOPE_COOKIE`): `:ok` or
  `{:error, message}`. A cookie is 1 to 255 printable ASCII characters (what OTP itself takes
  from `~/.erlang.cookie`, and what fits in an atom). The message never quotes the cookie.
  """
  @spec check_cookie(binary(), String.t()) :: :ok | {:error, String.t()}
  defdelegate check_cookie(c, source), to: Parse

  # An argument quoted in a message: printable, at most 40 characters. Also used by the lab's
  # `mix binscope.demo` (Binscope.Demo.parse_argv/1).
  @doc false
  defdelegate quote_arg(arg), to: Parse
  @doc false
  defdelegate quote_switch(switch), to: Parse

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
      [node: node, timeout: o.timeout] ++
        Enum.to_list(Map.take(o, [:by, :detail, :workers, :window]))

    Binscope.top(Map.get(o, :limit, Options.default(:top, :limit)), opts)
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
