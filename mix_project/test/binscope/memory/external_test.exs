defmodule Binscope.Memory.ExternalTest do
  use ExUnit.Case, async: false

  alias Binscope.{Cluster, SchedulerProof}
  alias Binscope.LeakScenario, as: S

  @mib 1_048_576

  # The node's binary memory, once two readings 20 ms apart agree within 64 KiB: the estimate
  # below counts all of it, so binaries that earlier tests' processes are still releasing (a
  # killed process's heap is freed after its exit) must be gone before the first reading.
  defp binary_memory_settled(tries \\ 250) do
    a = :erlang.memory(:binary)
    Process.sleep(20)

    if abs(:erlang.memory(:binary) - a) > 65_536 and tries > 0,
      do: binary_memory_settled(tries - 1),
      else: :ok
  end

  test "binaries an ETS table shares with a process, and ones only the table holds" do
    Enum.each(Process.list(), &:erlang.garbage_collect/1)
    binary_memory_settled()
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

    # Killed however the test ends: a holder left alive would be the top leaker of later tests.
    on_exit(fn -> Process.exit(p, :kill) end)
    assert_receive :ready, 10_000
    :erlang.garbage_collect(p)
    {:ok, r} = Binscope.binaries_elsewhere()

    assert r.shared_elsewhere - before.shared_elsewhere == 10
    assert r.shared_elsewhere_bytes - before.shared_elsewhere_bytes == 10 * @mib
    # The estimate: within 1 MiB of the 20 MiB only the table holds.
    assert_in_delta r.only_elsewhere_bytes - before.only_elsewhere_bytes, 20 * @mib, @mib
    assert r.elsewhere_share > 0.5

    # The table read names the table: 30 binaries of 1 MiB, 20 MiB of them held by no process.
    row = Enum.find(r.tables, &(&1.table == t))
    assert %{name: :binscope_external, status: :complete, binaries: 30} = row
    assert row.bytes == 30 * @mib
    assert row.bytes_no_process_holds == 20 * @mib
    assert r.tables_attributed_bytes - (before.tables_attributed_bytes || 0) == 20 * @mib
    # A private table cannot be read by another process: listed as such, never guessed.
    priv = :ets.new(:binscope_private, [:private])
    :ets.insert(priv, {1, :binary.copy(<<1>>, @mib)})
    {:ok, r2} = Binscope.binaries_elsewhere()
    assert %{status: :private, binaries: 0} = Enum.find(r2.tables, &(&1.table == priv))
    # max_objects cuts a table short, and says so.
    {:ok, r3} = Binscope.binaries_elsewhere(max_objects: 10)
    assert %{status: :partial} = Enum.find(r3.tables, &(&1.table == t))
    # read_tables: false reads none.
    assert {:ok, %{tables: nil, tables_attributed_bytes: nil}} =
             Binscope.binaries_elsewhere(read_tables: false)

    S.stop_all([p])
    :ets.delete(t)
    :ets.delete(priv)
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

  test "reading tables holds no scheduler: 200k objects, 2,000 binaries, one worker per table" do
    t = :ets.new(:binscope_external_big, [:public])
    for i <- 1..200_000, do: :ets.insert(t, {i, {:payload, i, [i, i + 1]}})
    for i <- 1..2_000, do: :ets.insert(t, {{:bin, i}, :binary.copy(<<i>>, 1024)})
    others = MapSet.new(Process.list())

    outcome =
      SchedulerProof.clean_within(SchedulerProof.attempts(), fn ->
        {r, reports} =
          SchedulerProof.long_schedules(
            fn -> Binscope.binaries_elsewhere(max_objects: 300_000) end,
            &(not MapSet.member?(others, &1) or &1 == self())
          )

        assert {:ok, %{tables: tables}} = r
        assert %{status: :complete, binaries: 2_000} = Enum.find(tables, &(&1.table == t))
        reports
      end)

    assert outcome == :clean, inspect(outcome)
    :ets.delete(t)
  end
end
