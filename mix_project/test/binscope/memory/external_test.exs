defmodule Binscope.Memory.ExternalTest do
  use ExUnit.Case, async: false

  alias Binscope.Cluster
  alias Binscope.LeakScenario, as: S

  @mib 1_048_576

  test "binaries an ETS table shares with a process, and ones only the table holds" do
    {:ok, before} = Binscope.binaries_elsewhere()
    t = :ets.new(:binscope_external, [:public])
    me = self()

    # 10 x 1 MiB held by a process and by the table; 20 x 1 MiB by the table only.
    p =
      spawn(fn ->
        bins = for i <- 1..10, do: :binary.copy(<<i>>, @mib)
        for {b, i} <- Enum.with_index(bins), do: :ets.insert(t, {{:shared, i}, b})
        for i <- 1..20, do: :ets.insert(t, {{:only, i}, :binary.copy(<<i>>, @mib)})
        send(me, :ready)

        receive do
          :stop -> length(bins)
        end
      end)

    assert_receive :ready, 10_000
    :erlang.garbage_collect(p)
    {:ok, r} = Binscope.binaries_elsewhere()

    assert r.shared_elsewhere - before.shared_elsewhere == 10
    assert r.shared_elsewhere_bytes - before.shared_elsewhere_bytes == 10 * @mib
    # The estimate: within 1 MiB of the 20 MiB only the table holds.
    assert_in_delta r.only_elsewhere_bytes - before.only_elsewhere_bytes, 20 * @mib, @mib
    assert r.elsewhere_share > 0.5
    S.stop_all([p])
    :ets.delete(t)
  end

  test "on a node without Binscope" do
    Cluster.distribute!()
    {peer, node} = Cluster.start_peer()

    try do
      {:ok, r} = Binscope.binaries_elsewhere(node: node)
      assert r.binary_memory > 0 and r.seen_binaries > 0
      assert r.seen_bytes + r.only_elsewhere_bytes >= r.binary_memory
    after
      :peer.stop(peer)
    end
  end
end
