defmodule Binscope.CLI.Parse do
  @moduledoc false
  # The mix tasks' command lines into options (Binscope.CLI.parse/2): pure, creates no atom
  # (node names and cookies stay strings until Binscope.CLI.Connect uses them). Flags, their
  # types, ranges and defaults come from Binscope.CLI.Options.

  alias Binscope.Accounting.Options, as: API
  alias Binscope.CLI.Options

  import Binscope.CLI.Options, only: [flag: 1]

  @doc false
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
    switches = Options.switches(task)

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
        {:error, "#{flag(k)} needs a value (#{Options.expected(task, k)})"}

      {k, _} ->
        {:error, "#{flag(k)} must be #{Options.expected(task, k)}, got: #{quote_arg(value)}"}
    end
  end

  defp options_list(task), do: task |> Options.flags() |> Enum.join(", ")

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

  # Only --format and --timeout get their defaults here: the others are left to the call (and
  # the options a run was given stay told apart from the defaults).
  defp validate(task, parsed, cookie) do
    init = %{format: Options.default(task, :format), timeout: Options.default(task, :timeout)}

    parsed
    |> Enum.reduce_while({:ok, init}, fn {k, v}, {:ok, acc} ->
      case Options.value(task, k, v) do
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
          Map.get(o, :by, :memory) not in API.basic_metrics() ->
        {:error,
         "--detail basic collects only some figures: with it, --by must be " <>
           "#{API.expected({:one_of, API.basic_metrics()}, :cli)}; got: #{o.by}"}

      task == :leaks and Map.has_key?(o, :candidates) and
          Map.get(o, :mode, Options.default(:leaks, :mode)) != :targeted ->
        {:error, "--candidates applies to --mode targeted only (got --mode #{o.mode})"}

      task == :leaks and Map.has_key?(o, :idle_ms) and Map.get(o, :mode) == :full ->
        {:error, "--idle-ms applies to --mode targeted and dry_run only (got --mode full)"}

      true ->
        {:ok, o}
    end
  end

  defp combination(error, _task), do: error

  # Binscope.CLI.check_cookie/2.
  @doc false
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
end
