defmodule Binscope.Remote do
  @moduledoc """
  Runs Binscope's collector (`:binscope_collector`, OTP only) on the local node, on a remote node
  or on many nodes at once, with a hard timeout on every call.

  A remote node does not need Binscope installed: when it lacks the collector, or has a different
  version, the collector's object code is loaded onto it (`:code.load_binary/3` over `:erpc`).
  Nothing else is loaded or started there. The collector gathers compact data on the target
  (process_info lists, forced GCs when a leak mode asks for them); attribution runs here, in Rust.

  Security: remote inspection goes only through distributed Erlang, so it needs the node's cookie,
  like any `:erpc` call. A remote scan sees what `process_info/2` shows: pids, registered names,
  initial calls, current functions, memory figures and binary addresses, sizes and reference
  counts. It never reads message contents, process dictionaries (beyond proc_lib's
  `$initial_call`), ETS contents or binary data.

  Failures come back per node as `{:error, reason}`: `:not_distributed` (this node is not alive),
  `:noconnection` (down, unreachable or wrong cookie), `:timeout`, `{:collector_load_failed, _}`,
  or `{:remote_error, _}`. No call waits longer than its timeout.
  """

  @collector :binscope_collector

  @typedoc "A per-node outcome."
  @type outcome :: {:ok, term()} | {:error, term()}

  @doc """
  Calls `:binscope_collector.fun(args...)` on `node` within `timeout` ms.
  """
  @spec call(node(), atom(), list(), timeout()) :: outcome()
  def call(node, fun, args, _timeout) when node == node() do
    # In the caller: handing a whole-node result from another process to the caller would be
    # one large, unpreemptible copy.
    {:ok, apply(@collector, fun, args)}
  rescue
    e -> {:error, {:collector_failed, Exception.message(e)}}
  end

  def call(node, fun, args, timeout) do
    if Node.alive?() do
      # Connecting (and loading the collector) runs in a separate process bounded by the
      # timeout: connection set-up can block longer than any erpc timeout. The scan itself is
      # then an erpc call from the caller, so its (large) result arrives straight in the
      # caller's mailbox instead of being copied once more from a helper process.
      started = System.monotonic_time(:millisecond)

      with :ok <- bounded(timeout, fn -> ensure_collector(node, timeout) end) do
        left = max(timeout - (System.monotonic_time(:millisecond) - started), 1)
        erpc(node, @collector, fun, args, left)
      end
    else
      {:error, :not_distributed}
    end
  end

  @doc """
  Runs `fun.(node)` for every node in parallel; each is bounded by `timeout` ms (plus a small
  margin). Returns `%{node => outcome}`.
  """
  @spec each([node()], timeout(), (node() -> outcome())) :: %{node() => outcome()}
  def each(nodes, timeout, fun) do
    nodes
    |> Enum.uniq()
    |> Enum.map(fn n -> {n, start(fn -> fun.(n) end)} end)
    |> Map.new(fn {n, ref} -> {n, await(ref, timeout + 1_000)} end)
  end

  @doc "Makes sure `node` runs the same collector as this node; loads it there when not."
  @spec ensure_collector(node(), timeout()) :: :ok | {:error, term()}
  def ensure_collector(node, timeout) do
    local = @collector.module_info(:md5)

    case erpc(node, :erlang, :function_exported, [@collector, :module_info, 1], timeout) do
      {:ok, true} ->
        case erpc(node, @collector, :module_info, [:md5], timeout) do
          {:ok, ^local} -> :ok
          {:ok, _other} -> load(node, timeout)
          error -> error
        end

      {:ok, false} ->
        load(node, timeout)

      error ->
        error
    end
  end

  defp load(node, timeout) do
    case :code.get_object_code(@collector) do
      {mod, bin, file} ->
        _ = erpc(node, :code, :soft_purge, [mod], timeout)

        case erpc(node, :code, :load_binary, [mod, file, bin], timeout) do
          {:ok, {:module, ^mod}} -> :ok
          {:ok, {:error, reason}} -> {:error, {:collector_load_failed, reason}}
          error -> error
        end

      :error ->
        {:error, {:collector_load_failed, :no_object_code}}
    end
  end

  defp erpc(node, m, f, a, timeout) do
    {:ok, :erpc.call(node, m, f, a, timeout)}
  catch
    :error, {:erpc, :noconnection} -> {:error, :noconnection}
    :error, {:erpc, :timeout} -> {:error, :timeout}
    :error, {:erpc, reason} -> {:error, {:remote_error, reason}}
    :error, {:exception, reason, _stack} -> {:error, {:remote_error, reason}}
    :exit, {:exception, reason, _stack} -> {:error, {:remote_error, reason}}
    :exit, {:signal, reason} -> {:error, {:remote_error, reason}}
    :throw, value -> {:error, {:remote_error, {:throw, value}}}
  end

  # Connection set-up can block longer than erpc's own timeout (net_setuptime); run the call in
  # a separate process and give up on it after `timeout`, so callers never hang.
  defp bounded(timeout, fun), do: await(start(fun), timeout)

  defp start(fun) do
    caller = self()
    tag = make_ref()

    {pid, mref} =
      spawn_monitor(fn ->
        result =
          try do
            fun.()
          rescue
            e -> {:error, {:collector_failed, Exception.message(e)}}
          catch
            kind, reason -> {:error, {:collector_failed, {kind, reason}}}
          end

        send(caller, {tag, result})
      end)

    {tag, pid, mref}
  end

  defp await({tag, pid, mref}, timeout) do
    receive do
      {^tag, result} ->
        Process.demonitor(mref, [:flush])
        result

      {:DOWN, ^mref, :process, ^pid, reason} ->
        {:error, {:collector_failed, reason}}
    after
      timeout ->
        Process.exit(pid, :kill)
        Process.demonitor(mref, [:flush])

        receive do
          {^tag, _} -> :ok
        after
          0 -> :ok
        end

        {:error, :timeout}
    end
  end
end
