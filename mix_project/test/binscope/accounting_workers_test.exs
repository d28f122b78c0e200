defmodule Binscope.AccountingWorkersTest do
  # A whole-node scan is split among worker processes (`workers:`). These tests prove the split
  # changes nothing in the answer: same records, same order, store binaries resolved in every
  # chunk, and a worker killed mid-scan costs a rescan, not a missing or doubled process.
  use Binscope.StoreCase, async: false

  require Binscope.Collector, as: Collector

  alias Binscope.LeakScenario, as: S

  @procs 12_000

  setup do
    shared = :binary.copy(<<1>>, 50_000)

    pids =
      for i <- 1..@procs do
        # Every 1000th process holds a store binary: every piece a worker sends has one to
        # resolve. Every 10th owns an ordinary binary of its own size.
        own =
          cond do
            rem(i, 1000) == 0 -> Store.alloc!(10_000 + i)
            rem(i, 10) == 0 -> :binary.copy(<<2>>, 1_000 + i)
            true -> nil
          end

        spawn(fn ->
          receive do
            :stop -> {byte_size(shared), own}
          end
        end)
      end

    on_exit(fn -> S.stop_all(pids) end)
    %{pids: pids}
  end

  test "a scan split among workers returns the records of a scan by one process", %{pids: pids} do
    for detail <- [:basic, :full] do
      one = raw(pids, detail, 1)
      three = raw(pids, detail, 3)

      assert one.workers == 1 and three.workers == 3
      assert length(three.procs) == @procs
      assert stable(three) == stable(one), "#{detail}"

      {:ok, snap} = Binscope.snapshot(pids: pids, detail: detail, workers: 3)
      assert Enum.map(snap.processes, & &1.pid) == pids
      # Twelve store binaries of known size, each found at its real size whichever worker
      # scanned its holder.
      assert snap.summary.store_bytes == Enum.sum(for i <- 1..12, do: 10_000 + i * 1000)
      assert Enum.count(snap.processes, &(&1.native_store_bytes > 0)) == 12
    end
  end

  test "workers: :auto splits only scans large enough to gain from it", %{pids: pids} do
    assert raw(Enum.take(pids, 3_999), :basic, :auto).workers == 1
    auto = raw(pids, :basic, :auto).workers
    # One scheduler is left to the application and the VM's own threads.
    assert auto == max(1, min(:erlang.system_info(:schedulers_online) - 1, div(@procs, 4_000)))
  end

  test "a worker killed mid-scan has its chunk rescanned: no process lost or doubled",
       %{pids: pids} do
    # Calibrated before tracing: the calibration's own probe process must not be killed.
    assert {_, _} = :binscope_collector.calibration()
    me = self()
    killer = spawn_link(fn -> kill_spawned(me) end)
    :erlang.trace(me, true, [:procs, {:tracer, killer}])

    try do
      killed = raw(pids, :basic, 3)
      :erlang.trace(me, false, [:procs])
      assert stable(killed) == stable(raw(pids, :basic, 1))
      send(killer, {:count, self()})
      assert_receive {:killed, n}
      assert n >= 2
    after
      :erlang.trace(me, false, [:procs])
    end
  end

  test "bad workers values are refused with ArgumentError" do
    for bad <- [0, -1, 1025, :many, 1.5] do
      assert_raise ArgumentError, ~r/:workers must be :auto or an integer in 1..1024/, fn ->
        Binscope.processes(workers: bad)
      end
    end
  end

  defp raw(pids, detail, workers) do
    :binscope_collector.snapshot(%{pids: pids, detail: detail, workers: workers})
  end

  # Records without the figures an idle process still changes (none here, but memory and
  # reductions of a process can move between two scans when a system process touches it).
  defp stable(%{procs: procs}) do
    Enum.map(procs, fn
      Collector.basic(pid: p, binaries: b, listed_bytes: l) -> {p, b, l}
      Collector.process(pid: p, binaries: b, listed_bytes: l) -> {p, b, l}
    end)
  end

  defp kill_spawned(me) do
    kill_spawned(me, 0)
  end

  defp kill_spawned(me, n) do
    receive do
      {:trace, ^me, :spawn, pid, _mfa} ->
        Process.exit(pid, :kill)
        kill_spawned(me, n + 1)

      {:count, from} ->
        send(from, {:killed, n})
        kill_spawned(me, n)

      _ ->
        kill_spawned(me, n)
    end
  end
end
