defmodule Binscope.RemoteTest do
  # Real peer nodes on loopback; the test node becomes distributed.
  use ExUnit.Case, async: false

  alias Binscope.Cluster

  @mib 1_048_576

  setup_all do
    Cluster.distribute!()
    {bare, bare_node} = Cluster.start_peer()
    {full, full_node} = Cluster.start_peer(binscope: true)
    Cluster.peer_leaker!(bare_node)

    on_exit(fn ->
      for p <- [bare, full] do
        try do
          :peer.stop(p)
        catch
          :exit, _ -> :ok
        end
      end
    end)

    %{bare: bare_node, full: full_node}
  end

  test "a node without Binscope: the collector is loaded there and memory/processes work", c do
    refute :erpc.call(c.bare, :code, :is_loaded, [Binscope.Native])
    {:ok, m} = Binscope.memory(node: c.bare)
    assert m.node == c.bare
    refute m.binscope_loaded
    assert m.store_live_bytes == 0
    assert is_integer(m.rss) and m.total > 0
    # Every module of the collector (it is several, by concept).
    for m <- :binscope_collector.modules(),
        do: assert({:file, _} = :erpc.call(c.bare, :code, :is_loaded, [m]))

    {:ok, procs} = Binscope.processes(node: c.bare)
    assert length(procs) == :erpc.call(c.bare, :erlang, :system_info, [:process_count])
    assert Enum.all?(procs, &(node(&1.pid) == c.bare and &1.node == c.bare))
    assert Enum.any?(procs, &(&1.registered_name == :code_server))
  end

  test "leaks on a remote node without Binscope finds the leaker with exact bytes", c do
    {pid, dropped} = :erpc.call(c.bare, :binscope_peer_leaker, :burst, [4, @mib])
    assert dropped == 4 * @mib
    {:ok, [r | _]} = Binscope.leaks(node: c.bare, limit: 3)
    assert r.pid == pid
    assert r.reclaimed_bytes == dropped
    assert r.node == c.bare
    send(pid, :stop)
  end

  test "a remote node with Binscope: store binaries counted at real size, reclaimed exactly", c do
    {pid, total} =
      :erpc.call(c.full, Binscope.LeakScenario, :burst_then_idle, [3, 2 * @mib, [store: true]])

    {:ok, [r]} = Binscope.processes(node: c.full, pids: [pid])

    assert r.native_store_bytes == total,
           inspect(
             Map.take(r, [
               :native_store_bytes,
               :unresolved_store_binaries,
               :binary_refs,
               :binary_bytes,
               :binary_uss
             ])
           )

    {:ok, m} = Binscope.memory(node: c.full)
    assert m.binscope_loaded and m.store_live_bytes >= total

    {:ok, [leak | _]} = Binscope.leaks(node: c.full, limit: 1)
    assert leak.pid == pid and leak.reclaimed_bytes == total
    send(pid, :stop)
  end

  test "a cluster scan returns per-node results; a dead node is a per-node error, no hang", c do
    dead = :"nobody#{System.unique_integer([:positive])}@127.0.0.1"

    {t, {:ok, res}} =
      :timer.tc(fn -> Binscope.top(3, nodes: [c.bare, c.full, dead], timeout: 5_000) end)

    assert {:ok, [_, _, _]} = res[c.bare]
    assert {:ok, [_, _, _]} = res[c.full]
    assert {:error, reason} = res[dead]
    assert reason in [:noconnection, :timeout]
    assert t < 7_000_000

    {:ok, all} = Binscope.memory(nodes: :connected)
    assert Map.has_key?(all, node()) and Map.has_key?(all, c.bare) and Map.has_key?(all, c.full)
    assert Enum.all?(all, fn {_, r} -> match?({:ok, %{total: _}}, r) end)
  end

  test "a wrong cookie is a clear error within the timeout" do
    {peer, node} = Cluster.start_peer(cookie: :not_the_right_cookie)
    {t, res} = :timer.tc(fn -> Binscope.memory(node: node, timeout: 5_000) end)
    assert res == {:error, :noconnection}
    assert t < 6_000_000
    :peer.stop(peer)
  end

  test "a timeout shorter than the scan gives {:error, :timeout}", c do
    _ = :erpc.call(c.bare, :binscope_peer_leaker, :idle, [20_000])
    assert {:error, :timeout} = Binscope.processes(node: c.bare, timeout: 1)
  end

  test "a peer dying in the middle of a cluster scan: partial results, per-node error, no hang",
       c do
    {peer, dying} = Cluster.start_peer()
    Cluster.peer_leaker!(dying)
    _ = :erpc.call(dying, :binscope_peer_leaker, :idle, [30_000])
    # The killer starts inside the timed call: a test process delayed between starting it and
    # starting the clock made t < 30 ms once (OTP 27 root, loaded machine).
    {t, {killer, {:ok, res}}} =
      :timer.tc(fn ->
        killer = spawn(fn -> Process.sleep(30) && :peer.stop(peer) end)
        {killer, Binscope.leaks(mode: :full, nodes: [c.bare, dying], timeout: 20_000)}
      end)

    assert {:ok, _} = res[c.bare]
    assert {:error, reason} = res[dying]
    assert reason in [:noconnection, :timeout] or match?({:remote_error, _}, reason)
    # It died while the scan ran (killed 30 ms in), and the scan did not wait for the timeout.
    assert t > 30_000 and t < 20_000_000
    Process.exit(killer, :kill)
  end
end
