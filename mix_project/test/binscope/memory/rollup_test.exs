defmodule Binscope.Memory.RollupTest do
  use ExUnit.Case, async: false

  alias Binscope.Cluster
  alias Binscope.LeakScenario, as: S

  @mib 1_048_576

  defp group(groups, g), do: Enum.find(groups, &(&1.group == g))

  test "by application: a process under kernel's group leader counts for kernel" do
    {:ok, before} = Binscope.rollup()
    [[master]] = :ets.match(:ac_tab, {{:application_master, :kernel}, :"$1"})
    me = self()

    p =
      spawn(fn ->
        bin = :binary.copy(<<7>>, 8 * @mib)
        send(me, :ready)

        receive do
          :stop -> byte_size(bin)
        end
      end)

    assert_receive :ready

    :erlang.group_leader(master, p)
    {:ok, after_} = Binscope.rollup(by: :application)
    k0 = group(before, :kernel)
    k1 = group(after_, :kernel)
    assert k1.processes == k0.processes + 1
    assert_in_delta k1.binary_pss - k0.binary_pss, 8 * @mib, 64 * 1024
    assert Enum.all?(after_, &(&1.total == &1.memory + &1.binary_pss + &1.native_store_bytes))
    S.stop_all([p])
  end

  test "by registered name and by initial call" do
    {:ok, groups} = Binscope.rollup(by: :registered_name)
    assert %{processes: 1} = group(groups, :code_server)
    refute group(groups, :undefined)
    assert group(groups, nil).processes > 1
    {:ok, calls} = Binscope.rollup(by: :initial_call)
    assert Enum.any?(calls, &match?({_, _, _}, &1.group))
    assert_raise ArgumentError, ~r/:by must be one of/, fn -> Binscope.rollup(by: :memory) end
  end

  test "by application on a node without Binscope" do
    Cluster.distribute!()
    {peer, node} = Cluster.start_peer()

    try do
      {:ok, groups} = Binscope.rollup(node: node)
      assert %{processes: n} = group(groups, :kernel)
      assert n > 5
      total = Enum.sum(Enum.map(groups, & &1.processes))
      assert total == :erpc.call(node, :erlang, :system_info, [:process_count])
    after
      :peer.stop(peer)
    end
  end

  test "by label: labelled processes group under their label (OTP 27+), all nil before" do
    otp = String.to_integer(List.to_string(:erlang.system_info(:otp_release)))
    me = self()
    label = {:rollup_test, make_ref()}

    ps =
      for _ <- 1..3 do
        spawn(fn ->
          if otp >= 27, do: apply(:proc_lib, :set_label, [label])
          bin = :binary.copy(<<9>>, @mib)
          send(me, :ready)

          receive do
            :stop -> byte_size(bin)
          end
        end)
      end

    for _ <- ps, do: assert_receive(:ready)
    {:ok, groups} = Binscope.rollup(by: :label)

    if otp >= 27 do
      g = group(groups, label)
      assert g.processes == 3
      assert_in_delta g.binary_pss, 3 * @mib, 64 * 1024
    else
      # No process can have a label before OTP 27: one group, nil, holding every process.
      assert [%{group: nil}] = groups
    end

    S.stop_all(ps)
  end
end
