defmodule Binscope.Cluster do
  @moduledoc """
  Real peer nodes on loopback for remote and cluster tests (OTP's `:peer`).

  `distribute!/0` makes the test node itself distributed (starting epmd when needed); peers are
  started with or without Binscope on their code path. `peer_module!/2` compiles a small Erlang
  module (OTP only) and loads it onto a peer, for scenarios on nodes without Binscope or Elixir.
  """

  @doc "Starts epmd and distribution (longnames on 127.0.0.1) unless this node is alive."
  def distribute! do
    unless Node.alive?() do
      {_, 0} = System.cmd("epmd", ["-daemon"])
      name = :"binscope_test_#{System.unique_integer([:positive])}@127.0.0.1"

      case :net_kernel.start([name, :longnames]) do
        {:ok, _} -> :ok
        {:error, {:already_started, _}} -> :ok
      end
    end

    :ok
  end

  @doc """
  Starts a peer node. `binscope: true` puts Binscope (and Elixir) on its code path and loads the
  NIF there; otherwise it has OTP only. `cookie:` gives it another cookie, in which case it is
  controlled over stdio (it cannot connect to us). Returns `{peer_pid, node}`.
  """
  def start_peer(opts \\ []) do
    name = :"peer#{System.unique_integer([:positive])}"
    paths = if opts[:binscope], do: binscope_paths(), else: []
    cookie = opts[:cookie]

    # connect_all false: peers do not mesh with each other (and global stays quiet).
    args =
      [~c"-connect_all", ~c"false"] ++
        Enum.flat_map(paths, &[~c"-pa", &1]) ++
        if(cookie, do: [~c"-setcookie", Atom.to_charlist(cookie)], else: [])

    base = %{name: name, host: ~c"127.0.0.1", longnames: true, args: args}
    conf = if cookie, do: Map.put(base, :connection, :standard_io), else: base
    {:ok, peer, node} = :peer.start(conf)

    if opts[:binscope] do
      {:module, _} = :erpc.call(node, :code, :ensure_loaded, [Binscope.Native])
      {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:binscope])
    end

    {peer, node}
  end

  defp binscope_paths do
    [:binscope, :elixir, :logger]
    # :code.lib_dir/2 is deprecated on OTP 29; the ebin dir under lib_dir/1 is the same path.
    |> Enum.map(&:filename.join(:code.lib_dir(&1), ~c"ebin"))
  end

  @peer_leaker """
  -module(binscope_peer_leaker).
  -export([burst/2, idle/1, labelled/1]).
  burst(N, Size) ->
      Parent = self(),
      Pid = spawn(fun() ->
                      Bins = [binary:copy(<<I>>, Size) || I <- lists:seq(1, N)],
                      Parent ! {burst_done, self(), length(Bins) * Size},
                      receive stop -> ok end
                  end),
      receive {burst_done, Pid, Total} -> {Pid, Total} end.
  idle(N) ->
      [spawn(fun() -> receive stop -> ok end end) || _ <- lists:seq(1, N)].
  labelled(Label) ->
      Parent = self(),
      Pid = spawn(fun() ->
                      case erlang:function_exported(proc_lib, set_label, 1) of
                          true -> proc_lib:set_label(Label);
                          false -> ok
                      end,
                      Parent ! {labelled, self()},
                      receive stop -> ok end
                  end),
      receive {labelled, Pid} -> Pid end.
  """

  @doc """
  Loads `binscope_peer_leaker` (burst/2, idle/1, labelled/1; OTP only) onto `node`. Scanned
  and parsed here (forms are plain terms), compiled by the node's own compiler, so a node of
  another OTP release loads it too.
  """
  def peer_leaker!(node) do
    {:ok, mod, bin} = :erpc.call(node, :compile, :forms, [forms(@peer_leaker), [:binary]])

    {:module, ^mod} =
      :erpc.call(node, :code, :load_binary, [mod, ~c"binscope_peer_leaker.erl", bin])

    :ok
  end

  @doc "The abstract forms of Erlang source text (plain terms any OTP's compiler reads)."
  def forms(source) do
    {:ok, tokens, _} = :erl_scan.string(String.to_charlist(source))

    tokens
    |> Enum.chunk_while(
      [],
      fn
        {:dot, _} = t, acc -> {:cont, Enum.reverse([t | acc]), []}
        t, acc -> {:cont, [t | acc]}
      end,
      fn acc -> {:cont, acc} end
    )
    |> Enum.map(fn f ->
      {:ok, form} = :erl_parse.parse_form(f)
      form
    end)
  end

  @doc "Stops a peer started by `start_peer/1`; one that is already gone is fine."
  def stop_peer(peer) do
    :peer.stop(peer)
  catch
    :exit, _ -> :ok
  end
end
