defmodule Binscope.CrossOtpTest do
  # Cross-version remote: this node inspects a bare node (OTP only, no Binscope, no Elixir) that
  # runs another OTP release. Run by scripts/test_cross_otp.sh (`make test-cross-otp`), which
  # starts the target in a Debian root or on the host and passes it here:
  #   BINSCOPE_CROSS_TARGET             the target node (longnames, 127.0.0.1)
  #   BINSCOPE_CROSS_NO_COMPILER_TARGET a second target whose code path lacks OTP's compiler
  #   BINSCOPE_CROSS_COOKIE             their cookie
  # Excluded from plain `mix test` (tag :cross_otp); without these variables it fails.
  use ExUnit.Case, async: false

  alias Binscope.Cluster

  @moduletag :cross_otp
  @mib 1_048_576

  setup_all do
    target = String.to_atom(System.fetch_env!("BINSCOPE_CROSS_TARGET"))
    no_compiler = String.to_atom(System.fetch_env!("BINSCOPE_CROSS_NO_COMPILER_TARGET"))
    cookie = String.to_atom(System.fetch_env!("BINSCOPE_CROSS_COOKIE"))
    Cluster.distribute!()

    for n <- [target, no_compiler] do
      Node.set_cookie(n, cookie)
      connect!(n, 100)
    end

    release = fn n -> :erpc.call(n, :erlang, :system_info, [:otp_release]) end
    here = List.to_integer(:erlang.system_info(:otp_release))
    there = List.to_integer(release.(target))
    assert there != here, "the target runs another OTP (#{there}) than the caller (#{here})"
    refute :erpc.call(target, :code, :is_loaded, [:elixir])
    Cluster.peer_leaker!(target)
    IO.puts("cross-OTP: caller OTP #{here} -> target OTP #{there} (#{target})")
    %{target: target, no_compiler: no_compiler, here: here, there: there}
  end

  defp connect!(node, 0), do: flunk("cannot connect to #{node}")

  defp connect!(node, tries) do
    if Node.connect(node) == true do
      :ok
    else
      Process.sleep(200)
      connect!(node, tries - 1)
    end
  end

  test "the collector loads on the target, by the way its release needs", c do
    {:ok, m} = Binscope.memory(node: c.target)
    assert m.node == c.target and m.total > 0
    refute m.binscope_loaded

    local = :binscope_collector.module_info(:md5)
    info = :erpc.call(c.target, :binscope_collector, :module_info, [])

    if c.there < c.here do
      # Compiled there from the abstract code: another MD5, tagged with ours.
      refute info[:md5] == local
      assert info[:attributes][:binscope_source_md5] == [local]
    else
      assert info[:md5] == local
    end
  end

  test "processes: every process of the target, with labels where its OTP has them", c do
    labelled = :erpc.call(c.target, :binscope_peer_leaker, :labelled, [{:cross, 1}])
    label = if c.there >= 27, do: {:cross, 1}, else: nil

    for detail <- [:full, :basic] do
      before = MapSet.new(:erpc.call(c.target, :erlang, :processes, []))
      {:ok, procs} = Binscope.processes(node: c.target, detail: detail)
      after_ = MapSet.new(:erpc.call(c.target, :erlang, :processes, []))
      found = Enum.map(procs, & &1.pid)
      assert length(found) == length(Enum.uniq(found)), "#{detail}: no process twice"
      # Every process that lived through the scan is in it (erpc's own come and go).
      lived = MapSet.intersection(before, after_)
      assert MapSet.subset?(lived, MapSet.new(found)), "#{detail}"
      assert Enum.all?(procs, &(node(&1.pid) == c.target and &1.node == c.target))
      assert Enum.any?(procs, &(&1.registered_name == :code_server))
      assert Enum.find(procs, &(&1.pid == labelled)).label == label
    end

    {:ok, [_, _, _]} = Binscope.top(3, node: c.target, by: :memory)
    send(labelled, :stop)
  end

  test "leaks: the leaker is found with exact bytes", c do
    {pid, dropped} = :erpc.call(c.target, :binscope_peer_leaker, :burst, [4, @mib])
    {:ok, [r | _]} = Binscope.leaks(node: c.target, limit: 3)
    assert r.pid == pid and r.node == c.target
    assert r.reclaimed_bytes == dropped
    send(pid, :stop)
  end

  test "a target without OTP's compiler: a clear error where it needs one, else it works", c do
    refute :erpc.call(c.no_compiler, :code, :is_loaded, [:compile])
    assert :erpc.call(c.no_compiler, :code, :which, [:compile]) == :non_existing
    res = Binscope.memory(node: c.no_compiler)

    if c.there < c.here do
      release = Integer.to_string(c.there)
      assert res == {:error, {:collector_load_failed, {:no_compiler, release}}}
    else
      assert {:ok, %{node: n}} = res
      assert n == c.no_compiler
    end
  end
end
