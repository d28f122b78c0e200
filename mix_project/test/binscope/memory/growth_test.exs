defmodule Binscope.Memory.GrowthTest do
  use ExUnit.Case, async: false

  alias Binscope.Cluster
  alias Binscope.LeakScenario, as: S

  @mib 1_048_576

  # Grows by 10 MiB of binaries, one MiB every 50 ms, once told to.
  defp grower do
    spawn(fn ->
      receive do
        :grow -> :ok
      end

      bins =
        for i <- 1..10 do
          Process.sleep(50)
          :binary.copy(<<i>>, @mib)
        end

      receive do
        :stop -> length(bins)
      end
    end)
  end

  @tag timeout: 120_000
  test "among 2,000 idle processes, one growing by 10 MB ranks above one holding 100 MB" do
    idle = S.idle_processes(2_000)
    big_bin = :binary.copy(<<1>>, 100 * @mib)

    static =
      spawn(fn ->
        receive do
          :stop -> byte_size(big_bin)
        end
      end)

    g = grower()

    try do
      # The grower starts while the first snapshot is taken (or just after); its 10 steps take
      # about 0.5 s, the window leaves room for a loaded machine (9 of 10 MiB were in once at
      # 1.5 s, another test's VM sharing the 2 cores).
      task = Task.async(fn -> Binscope.top(3, by: :binary_bytes, window: 3_000) end)
      Process.sleep(100)
      send(g, :grow)
      {:ok, [first | rest]} = Task.await(task, 60_000)

      assert first.pid == g
      assert first.growth == 10 * @mib
      assert first.growth_from == 0 and first.window_ms == 3_000
      # The static holder did not grow: it is not above anything that did.
      refute Enum.any?(rest, &(&1.pid == static and &1.growth > 0))

      # Without a window, size ranks: the static holder comes first.
      {:ok, [big | _]} = Binscope.top(1, by: :binary_bytes)
      assert big.pid == static
    after
      # Left alive, the 100 MB holder would lead the next tests' rankings.
      S.stop_all([g, static | idle])
    end

    _ = big_bin
  end

  test "window: on a node without Binscope; a process born in the window grew from nil" do
    Cluster.distribute!()
    {peer, node} = Cluster.start_peer()
    Cluster.peer_leaker!(node)

    try do
      task = Task.async(fn -> Binscope.top(1, node: node, by: :binary_bytes, window: 1_000) end)
      Process.sleep(300)
      {pid, total} = :erpc.call(node, :binscope_peer_leaker, :burst, [4, @mib])
      {:ok, [r]} = Task.await(task, 30_000)
      assert r.pid == pid and r.growth == total and r.growth_from == nil
    after
      :peer.stop(peer)
    end
  end

  test "window: by a metric the VM may not give (native_bytes is unknown from OTP 27 on)" do
    # An unknown figure at either end makes that growth unknown (nil), ranked last; it had
    # raised ArithmeticError (nil - 0) wherever native_bytes was nil.
    assert {:ok, top} = Binscope.top(5, by: :native_bytes, window: 20)
    assert length(top) == 5

    for r <- top, is_nil(r.native_bytes), do: assert(is_nil(r.growth))
  end

  test "window: is validated" do
    assert_raise ArgumentError, ~r/:window must be/, fn -> Binscope.top(1, window: 0) end
    assert_raise ArgumentError, ~r/:window must be/, fn -> Binscope.top(1, window: :soon) end
  end
end
