defmodule Binscope.Memory.EtsTest do
  use ExUnit.Case, async: false

  alias Binscope.{Cluster, SchedulerProof}

  test "the largest tables first, with name, owner, type, size and bytes" do
    big = :ets.new(:binscope_big, [:bag, :public])
    mid = :ets.new(:binscope_mid, [:named_table, :ordered_set, :public])
    for i <- 1..200_000, do: :ets.insert(big, {i, i})
    for i <- 1..50_000, do: :ets.insert(mid, {i, i})
    Process.register(self(), :binscope_ets_test_owner)

    {:ok, [a, b | _]} = Binscope.ets_tables(limit: 5)
    w = :erlang.system_info(:wordsize)
    assert %{table: ^big, name: :binscope_big, type: :bag, size: 200_000} = a
    assert a.owner == self() and a.owner_name == :binscope_ets_test_owner
    assert a.memory == :ets.info(big, :memory) * w
    assert %{table: :binscope_mid, name: :binscope_mid, type: :ordered_set, size: 50_000} = b
    assert {:ok, [_]} = Binscope.ets_tables(limit: 1)
    assert_raise ArgumentError, ~r/:limit must be/, fn -> Binscope.ets_tables(limit: 0) end
    Process.unregister(:binscope_ets_test_owner)
  end

  test "on a node without Binscope" do
    Cluster.distribute!()
    {peer, node} = Cluster.start_peer()

    try do
      {:ok, tables} = Binscope.ets_tables(node: node, limit: 50)
      assert Enum.all?(tables, &(node(&1.owner) == node))
      # The code server owns a table on every release (:code on OTP 25, :code_server on 29).
      assert Enum.any?(tables, &(&1.owner_name == :code_server))
    after
      :peer.stop(peer)
    end
  end

  test "2,000 tables: no normal scheduler held for 1 ms" do
    owner =
      spawn(fn ->
        for i <- 1..2_000, do: :ets.new(:t, [:public]) |> :ets.insert({i})

        receive do
          :stop -> :ok
        end
      end)

    Process.sleep(200)
    me = self()

    outcome =
      SchedulerProof.clean_within(SchedulerProof.attempts(), fn ->
        {r, reports} =
          SchedulerProof.long_schedules(fn -> Binscope.ets_tables(limit: 20) end, &(&1 == me))

        assert {:ok, [_ | _]} = r
        reports
      end)

    assert outcome == :clean, inspect(outcome)
    send(owner, :stop)
  end
end
