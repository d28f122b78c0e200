defmodule Binscope.CLI.Connect do
  @moduledoc """
  Connects the command line's VM to a target node as a *hidden* node (it does not join the
  target's cluster view), with the given cookie.

  The cookie is set only for the target (`:erlang.set_cookie/2`) and is never printed or logged;
  error messages name the node, not the cookie. Distribution needs atoms: the node name and the
  cookie become atoms in this short-lived VM only (that is how OTP takes them). epmd is started
  when it is not running.
  """

  @doc "The target node (an atom), connecting first when `opts` has `:node`."
  @spec target(map()) :: {:ok, node()} | {:error, String.t()}
  def target(%{node: name} = opts) do
    with {:ok, cookie} <- cookie(opts),
         :ok <- start_distribution(name) do
      node = String.to_atom(name)
      if cookie, do: :erlang.set_cookie(node, String.to_atom(cookie))

      if Node.connect(node) == true,
        do: {:ok, node},
        else: {:error, "cannot connect to #{name} (down, unreachable, or wrong cookie)"}
    end
  end

  def target(_opts), do: {:ok, node()}

  defp cookie(%{cookie: c}), do: {:ok, c}

  defp cookie(%{cookie_file: f}) do
    case File.read(f) do
      {:ok, c} ->
        case String.trim(c) do
          "" -> {:error, "cookie file #{f} is empty"}
          c -> {:ok, c}
        end

      {:error, reason} ->
        {:error, "cannot read cookie file #{f}: #{:file.format_error(reason)}"}
    end
  end

  defp cookie(_), do: {:ok, nil}

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
        {:error, reason} -> {:error, "cannot start distribution: #{inspect(reason)}"}
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
