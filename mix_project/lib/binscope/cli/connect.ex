defmodule Binscope.CLI.Connect do
  @moduledoc """
  Connects the command line's VM to a target node as a *hidden* node (it does not join the
  target's cluster view), with the target's cookie, before a deadline.

  The cookie comes from `--cookie` (already taken out of the arguments by `Binscope.CLI.parse/2`),
  `--cookie-file PATH`, the `BINSCOPE_COOKIE` environment variable, or else OTP's own
  `~/.erlang.cookie`, in that order. It is checked (`Binscope.CLI.check_cookie/2`) before it
  becomes an atom, set only for the target (`:erlang.set_cookie/2`), and never printed or
  logged: messages name the node and the file, never the cookie.

  Failures are told apart: no epmd answering at the host (host down or no node there), no such
  name registered there (with the names epmd lists), a refused handshake (the node is up: most
  likely a wrong cookie), or no answer before the deadline (a stopped or overloaded node).

  Distribution needs atoms: the node name and the cookie become atoms in this short-lived VM
  only (that is how OTP takes them). epmd is started when it is not running.
  """

  alias Binscope.{CLI, Remote}

  @env "BINSCOPE_COOKIE"
  # A cookie file is small; anything larger is not one (and is not read further).
  @max_file 65_536

  @doc "The environment variable a cookie is read from."
  @spec env() :: String.t()
  def env, do: @env

  @doc """
  The target node (an atom), connecting first before `deadline` (see `Binscope.Remote`) when
  `opts` has `:node`.
  """
  @spec target(map(), Remote.deadline()) :: {:ok, node()} | {:error, String.t()}
  def target(%{node: name} = opts, deadline) do
    with {:ok, cookie} <- cookie(opts),
         :ok <- start_distribution(name),
         :ok <- registered(name, deadline) do
      node = String.to_atom(name)
      if cookie, do: :erlang.set_cookie(node, String.to_atom(cookie.()))
      connect(node, name, deadline)
    end
  end

  def target(_opts, _deadline), do: {:ok, node()}

  @doc """
  The cookie `opts` and the environment give, as a function returning it (or `nil`: OTP's
  default), or a message saying why it cannot be used.
  """
  @spec cookie(map()) :: {:ok, (... -> String.t()) | nil} | {:error, String.t()}
  def cookie(%{cookie: c}), do: {:ok, c}
  def cookie(%{cookie_file: f}), do: read_cookie_file(f)

  def cookie(_opts) do
    case System.get_env(@env) do
      nil -> {:ok, nil}
      c -> checked(trim(c), @env)
    end
  end

  defp read_cookie_file(f) do
    with {:ok, %File.Stat{type: :regular, size: size}} <- File.stat(f),
         :ok <- if(size > @max_file, do: {:error, :too_large}, else: :ok),
         {:ok, c} <- File.read(f) do
      checked(trim(c), "cookie file #{f}")
    else
      {:ok, %File.Stat{}} ->
        {:error, "cookie file #{f} is not a regular file"}

      {:error, :too_large} ->
        {:error, "cookie file #{f} is larger than #{@max_file} bytes: not a cookie file"}

      {:error, reason} ->
        {:error, "cannot read cookie file #{f}: #{:file.format_error(reason)}"}
    end
  end

  defp checked(c, source) do
    case CLI.check_cookie(c, source) do
      :ok -> {:ok, fn -> c end}
      error -> error
    end
  end

  # As OTP reads ~/.erlang.cookie: trailing white space (a final newline) is not part of it.
  defp trim(c) do
    case :binary.last(<<0, c::binary>>) do
      b when b in [?\s, ?\t, ?\r, ?\n, ?\f] -> trim(binary_part(c, 0, byte_size(c) - 1))
      _ -> c
    end
  end

  # epmd at the target's host tells "no node there" and "no such name" apart from a refused
  # handshake.
  defp registered(name, deadline) do
    [short, host] = String.split(name, "@", parts: 2)

    case bounded(deadline, fn -> :erl_epmd.names(String.to_charlist(host)) end) do
      {:ok, {:ok, names}} ->
        me = node() |> Atom.to_string() |> String.split("@") |> hd()
        listed = for {n, _port} <- names, List.to_string(n) != me, do: List.to_string(n)

        if short in listed do
          :ok
        else
          shown = listed |> Enum.sort() |> Enum.take(10) |> Enum.join(", ")

          {:error,
           "no node named #{short} at #{host} (epmd there lists: #{if shown == "", do: "none", else: shown})"}
        end

      {:ok, {:error, _}} ->
        {:error, "cannot reach epmd at #{host}: the host is down or runs no Erlang node"}

      {:ok, other} ->
        {:error, "cannot ask epmd at #{host}: #{inspect(other, limit: 5)}"}

      :timeout ->
        {:error, "epmd at #{host} did not answer within the timeout"}
    end
  end

  defp connect(node, name, deadline) do
    case bounded(deadline, fn -> Node.connect(node) end) do
      {:ok, true} ->
        {:ok, node}

      {:ok, _} ->
        {:error,
         "#{name} refused the connection: it is up and registered with epmd, so most likely " <>
           "the cookie is wrong (or it uses the other name mode, short or long names)"}

      :timeout ->
        {:error,
         "#{name} did not complete the connection within the timeout " <>
           "(stopped, overloaded, or a firewall drops the distribution port)"}
    end
  end

  # Runs `fun` in a process given until `deadline`: connection set-up can block for
  # net_setuptime (7 s) whatever the timeout.
  defp bounded(deadline, fun) do
    task = Task.async(fun)

    case Task.yield(task, Remote.left(deadline)) || Task.shutdown(task, :brutal_kill) do
      {:ok, result} -> {:ok, result}
      _ -> :timeout
    end
  end

  defp start_distribution(target) do
    if Node.alive?() do
      :ok
    else
      [_, host] = String.split(target, "@", parts: 2)
      long? = String.contains?(host, ".")
      _ = System.cmd("epmd", ["-daemon"], stderr_to_stdout: true)
      me_host = if long?, do: "127.0.0.1", else: short_host()
      me = String.to_atom("binscope_cli_#{System.unique_integer([:positive])}@#{me_host}")
      domain = if long?, do: :longnames, else: :shortnames

      case :net_kernel.start(me, %{name_domain: domain, hidden: true}) do
        {:ok, _} -> :ok
        {:error, reason} -> {:error, "cannot start distribution: #{inspect(reason, limit: 5)}"}
      end
    end
  rescue
    e in ErlangError -> {:error, "cannot start distribution: #{Exception.message(e)}"}
  end

  defp short_host do
    {:ok, h} = :inet.gethostname()
    h |> List.to_string() |> String.split(".") |> hd()
  end
end
