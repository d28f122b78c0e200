defmodule Binscope.Hardening.TimeoutTest do
  # `timeout:` is a bound: every call over 100k processes returns within its timeout plus
  # Binscope.Remote.margin_ms/0, locally, with `node:` and with `nodes:` alike, and a call that
  # timed out leaves nothing behind (no process, no message, the heap reservation put back).
  use ExUnit.Case, async: false

  alias Binscope.{Cluster, Remote}

  @procs 100_000
  @timeout 200

  setup_all do
    Cluster.distribute!()
    {peer, node} = Cluster.start_peer()
    Cluster.peer_leaker!(node)
    remote = :erpc.call(node, :binscope_peer_leaker, :idle, [@procs])
    holders = hold(@procs)

    on_exit(fn ->
      Enum.each(holders, &Process.exit(&1, :kill))

      Cluster.stop_peer(peer)
    end)

    %{node: node, holders: holders, remote: remote}
  end

  # Processes that each hold a 100-byte refc binary, waiting to be told to stop.
  defp hold(n) do
    for i <- 1..n do
      spawn(fn ->
        bin = :binary.copy(<<rem(i, 256)>>, 100)

        receive do
          :stop -> byte_size(bin)
        end
      end)
    end
  end

  defp timed(fun) do
    {us, result} = :timer.tc(fun)
    {div(us, 1000), result}
  end

  # {name, timeout, call}. The long leak scan's timeout lets its sweep finish and cuts its GC
  # round short (a forced GC of every one of the 100k processes takes seconds).
  defp calls(target) do
    t = @timeout

    [
      {"processes", t, &Binscope.processes([timeout: &1] ++ target)},
      {"processes workers: 2", t, &Binscope.processes([timeout: &1, workers: 2] ++ target)},
      {"snapshot", t, &Binscope.snapshot([timeout: &1] ++ target)},
      {"top", t, &Binscope.top(5, [timeout: &1] ++ target)},
      {"memory", t, &Binscope.memory([timeout: &1] ++ target)},
      {"leaks targeted", t, &Binscope.leaks([timeout: &1] ++ target)},
      {"leaks full", t, &Binscope.leaks([mode: :full, timeout: &1] ++ target)},
      {"leaks full 1500", 1_500, &Binscope.leaks([mode: :full, timeout: &1] ++ target)}
    ]
  end

  # Each call returns within its bound, as {:error, :timeout} (per node with nodes:) unless it
  # finished in time; returns [{name, ms, outcome}].
  defp check_bound(target, unwrap) do
    for {name, timeout, fun} <- calls(target) do
      bound = timeout + Remote.margin_ms()
      {ms, result} = timed(fn -> fun.(timeout) end)
      outcome = unwrap.(result)
      label = "#{inspect(target)} #{name} (timeout #{timeout} ms)"
      IO.puts("timeout bound: #{label}: #{ms} ms, #{inspect(elem(outcome, 0))}")
      assert ms < bound, "#{label} took #{ms} ms, bound #{bound} ms"
      assert match?({:ok, _}, outcome) or outcome == {:error, :timeout}
      {name, ms, elem(outcome, 0)}
    end
  end

  test "local calls return within timeout + margin and leave nothing behind", c do
    {:min_heap_size, heap} = Process.info(self(), :min_heap_size)
    {:min_bin_vheap_size, vheap} = Process.info(self(), :min_bin_vheap_size)
    count = :erlang.system_info(:process_count)

    results = check_bound([], & &1)
    # 100k processes do not fit into 200 ms here: the full-mode leak scan (one forced GC each)
    # must have been cut short.
    assert {"leaks full", _, :error} = List.keyfind(results, "leaks full", 0)

    # Collections already asked for may answer late: give them time to, then nothing may be left.
    Process.sleep(300)
    assert Process.info(self(), :min_heap_size) == {:min_heap_size, heap}
    assert Process.info(self(), :min_bin_vheap_size) == {:min_bin_vheap_size, vheap}
    assert Process.info(self(), :message_queue_len) == {:message_queue_len, 0}
    assert :erlang.system_info(:process_count) == count
    # The interrupted GC rounds hurt nobody: every holder is alive and still answers.
    assert Enum.all?(c.holders, &Process.alive?/1)
    assert {:ok, _} = Binscope.processes(pids: Enum.take(c.holders, 10), timeout: 1_000)
  end

  test "node: calls return within timeout + margin; the target runs nothing after", c do
    count = :erpc.call(c.node, :erlang, :system_info, [:process_count])
    results = check_bound([node: c.node], & &1)
    assert {"leaks full", _, :error} = List.keyfind(results, "leaks full", 0)

    # The collector stops at its own deadline, not when its work is done.
    Process.sleep(Remote.margin_ms())
    assert :erpc.call(c.node, :erlang, :system_info, [:process_count]) <= count + 1
    assert Process.info(self(), :message_queue_len) == {:message_queue_len, 0}
    assert Enum.all?(c.remote, &(:erpc.call(c.node, :erlang, :is_process_alive, [&1]) == true))
  end

  test "nodes: calls return within timeout + margin, as node: does", c do
    results = check_bound([nodes: [c.node, node()]], &Map.fetch!(elem(&1, 1), c.node))
    assert {"leaks full", _, :error} = List.keyfind(results, "leaks full", 0)

    # The same call with node: and nodes: gives the same outcome, for a call that finishes and
    # for one that cannot (a forced GC of 100k processes in 50 ms). Not a call near its bound:
    # memory/1 took 2-13 ms here, so at a 20 ms timeout either outcome is right.
    assert {:ok, _} = Binscope.memory(node: c.node, timeout: 5_000)
    assert {:ok, %{} = b} = Binscope.memory(nodes: [c.node], timeout: 5_000)
    assert {:ok, _} = b[c.node]

    assert {:error, :timeout} = Binscope.leaks(mode: :full, node: c.node, timeout: 50)

    assert {:ok, %{} = m} = Binscope.leaks(mode: :full, nodes: [c.node], timeout: 50)
    assert m[c.node] == {:error, :timeout}
  end

  test "a deadline that has passed fails at once, before any work" do
    assert {:error, :timeout} = Remote.call(node(), :snapshot, [%{}], Remote.deadline(0) - 1)
    assert {:error, :timeout} = Binscope.leaks(idle_ms: 500, timeout: 100)
  end
end
