defmodule Binscope.Memory.RemoteTest do
  # A peer node with OTP only: the reconciliation comes from the OTP-only collector.
  use ExUnit.Case, async: false

  alias Binscope.{Cluster, SchedulerProof}

  setup_all do
    Cluster.distribute!()
    {peer, node} = Cluster.start_peer()
    on_exit(fn -> :peer.stop(peer) end)
    %{bare: node}
  end

  test "memory/1 on a node without Binscope reconciles RSS from the kernel and the VM", c do
    refute :erpc.call(c.bare, :code, :is_loaded, [Binscope.Native])
    {:ok, m} = Binscope.memory(node: c.bare)
    refute m.binscope_loaded
    assert m.native_resident == 0
    assert m.rss == m.rss_file + m.rss_shmem + m.vm_resident + m.unaccounted
    assert m.vm_blocks > 0 and m.vm_carriers >= m.vm_blocks
    assert Enum.any?(m.allocators, &(&1.allocator == :binary_alloc))
    # An idle bare node has little fragmentation, so the VM's range is tight and what lies
    # beyond it shows: thread stacks and malloc outside the VM's allocators (2.6 MiB of a
    # 39 MiB RSS measured on OTP 25), a few MiB, never tens.
    assert m.unaccounted >= 0 and m.unaccounted < 8 * 1_048_576,
           inspect(Map.drop(m, [:allocators, :fragmentation]))

    bare = c.bare
    {:ok, %{^bare => {:ok, m2}}} = Binscope.memory(nodes: [bare])
    assert m2.node == bare
  end

  @tag timeout: 120_000
  test "rollup, binaries_elsewhere, ets_tables and top(window:) over 10,000 processes hold no scheduler for 1 ms" do
    idle = Binscope.LeakScenario.idle_processes(10_000)
    before = MapSet.new(Process.list())
    me = self()
    keep? = &(&1 == me or not MapSet.member?(before, &1))

    outcome =
      SchedulerProof.clean_within(SchedulerProof.attempts(), fn ->
        {results, reports} =
          SchedulerProof.long_schedules(
            fn ->
              [
                Binscope.rollup(),
                Binscope.rollup(by: :registered_name),
                Binscope.binaries_elsewhere(),
                Binscope.ets_tables(),
                Binscope.top(5, window: 100, detail: :basic)
              ]
            end,
            keep?
          )

        assert Enum.all?(results, &match?({:ok, _}, &1))
        reports
      end)

    assert outcome == :clean, inspect(outcome, limit: :infinity)
    Binscope.LeakScenario.stop_all(idle)
  end

  test "memory/1 does not hold a normal scheduler for 1 ms" do
    # Allocator instances with something in them: every scheduler's instance answers.
    holders =
      for _ <- 1..(:erlang.system_info(:schedulers_online) * 4) do
        spawn(fn ->
          l = Enum.map(1..20_000, &:binary.copy(<<&1::32>>, 200))

          receive do
            :stop -> length(l)
          end
        end)
      end

    me = self()

    outcome =
      SchedulerProof.clean_within(SchedulerProof.attempts(), fn ->
        {results, reports} =
          SchedulerProof.long_schedules(
            fn -> for _ <- 1..20, do: Binscope.memory() end,
            &(&1 == me)
          )

        assert Enum.all?(results, &match?({:ok, %{vm_blocks: b}} when b > 0, &1))
        reports
      end)

    assert outcome == :clean, "memory/1 held a scheduler >= 1 ms: #{inspect(outcome)}"
    Enum.each(holders, &send(&1, :stop))
  end
end
