defmodule Binscope.Hardening.SoakTest do
  # Many processes on every scheduler put, intern, alloc, send and drop store binaries while a
  # killer kills them at random and a capacity is set. Afterwards: counters exactly at baseline,
  # the capacity never exceeded, jemalloc's bytes in use back within 1 MiB. long_schedule and
  # long_gc monitors run throughout and the worst case is reported. `make soak` runs it for 5 minutes.
  use Binscope.StoreCase, async: false

  @seconds String.to_integer(System.get_env("BINSCOPE_SOAK_SECONDS", "3"))
  @cap_room 16 * 1024 * 1024
  @mib 1024 * 1024

  @tag timeout: :infinity
  test "#{@seconds} s of concurrent churn under a killer and a capacity" do
    workers_n = 4 * System.schedulers_online()
    base = settle()
    jemalloc_base = in_use()
    tcache_base = Binscope.Store.allocator().tcache_bytes
    cap = base.live_bytes + @cap_room
    :ok = Store.set_capacity(cap)

    previous = :erlang.system_monitor(self(), [{:long_schedule, 1}, {:long_gc, 1}])
    sampler = spawn_link(fn -> sample_loop(0) end)
    registry = :ets.new(:soak_workers, [:public, :set])
    # Ops and refusals of every worker, including those the killer takes down mid-run.
    counters = :counters.new(2, [:write_concurrency])
    :ets.insert(registry, {:counters, counters})
    for i <- 1..workers_n, do: start_worker(registry, i)
    killer = spawn_link(fn -> kill_loop(registry, workers_n, 0) end)

    Process.sleep(@seconds * 1000)

    send(killer, {:stop, self()})
    assert_receive {:killed, kills}, 5_000
    for i <- 1..workers_n, [{^i, pid}] = :ets.lookup(registry, i), do: stop_worker(pid)
    send(sampler, {:stop, self()})
    assert_receive {:max_seen, max_seen}, 5_000
    :erlang.system_monitor(previous || :undefined)
    monitor = monitor_reports()

    final = settle(5_000)
    :ok = Store.set_capacity(:infinity)
    jemalloc_final = in_use()
    tcache_final = Binscope.Store.allocator().tcache_bytes
    s = Store.stats()
    ops = :counters.get(counters, 1)
    refused = :counters.get(counters, 2)

    IO.puts(
      "\nsoak: #{@seconds} s, #{workers_n} workers, #{ops} store ops, #{kills} kills, " <>
        "#{refused} capacity refusals, max live+reserved #{max_seen - base.live_bytes} B " <>
        "of #{@cap_room} B room, drift #{final.live_count - base.live_count} entries / " <>
        "#{final.live_bytes - base.live_bytes} B, jemalloc delta in use #{jemalloc_final - jemalloc_base} B " <>
        "(thread caches #{tcache_final - tcache_base} B), " <>
        "worst long_schedule #{inspect(monitor.long_schedule)}, worst long_gc #{inspect(monitor.long_gc)}"
    )

    assert final == base
    assert s.reserved_bytes == 0
    assert s.live_count == s.allocs - s.frees
    assert max_seen <= cap
    assert kills > 0
    assert refused > 0, "the capacity was never reached"
    assert abs(jemalloc_final - jemalloc_base) <= @mib
  end

  # What the NIF's allocations use, read the same way before and after the churn: every process
  # collected first (store binaries that earlier tests' processes dropped but still reference
  # are released then, not during the soak), then read until two reads 50 ms apart agree within
  # 64 KiB. jemalloc's `allocated` also counts the freed blocks each thread's cache keeps, and
  # the store's payload cache (`payload_cache_bytes`), and which threads ran the workers' calls
  # decides how many: they are not in use.
  defp in_use do
    Enum.each(Process.list(), &:erlang.garbage_collect/1)
    stable_in_use(read_in_use(), 40)
  end

  defp stable_in_use(last, 0), do: last

  defp stable_in_use(last, tries) do
    Process.sleep(50)
    now = read_in_use()
    if abs(now - last) <= 64 * 1024, do: now, else: stable_in_use(now, tries - 1)
  end

  defp read_in_use do
    a = Binscope.Store.allocator()
    a.allocated - a.tcache_bytes - a.payload_cache_bytes
  end

  defp start_worker(registry, i) do
    [{:counters, counters}] = :ets.lookup(registry, :counters)
    pid = spawn(fn -> worker_loop(registry, counters, i, 0, []) end)
    :ets.insert(registry, {i, pid})
    pid
  end

  defp worker_loop(registry, counters, i, ops, held) do
    receive do
      {:stop, from} ->
        send(from, {:stopped, self()})

      {:bin, bin} ->
        worker_loop(registry, counters, i, ops, Enum.take([bin | held], 8))
    after
      0 ->
        size = Enum.random([16, 100, 4096, 70_000, 300_000, @mib])

        result =
          case :rand.uniform(3) do
            1 -> Store.put(:binary.copy(<<i>>, size), label: :soak)
            2 -> Store.alloc(size, fill: rem(ops, 256), label: "soak")
            3 -> Store.intern(:binary.copy(<<rem(ops, 4)>>, size), label: :soak)
          end

        :counters.add(counters, 1, 1)

        case result do
          {:ok, bin} ->
            if rem(ops, 3) == 0, do: send_to_peer(registry, bin)
            if rem(ops, 16) == 0, do: :erlang.garbage_collect()
            worker_loop(registry, counters, i, ops + 1, Enum.take([bin | held], 8))

          {:error, :capacity} ->
            :counters.add(counters, 2, 1)
            :erlang.garbage_collect()
            worker_loop(registry, counters, i, ops + 1, [])
        end
    end
  end

  defp send_to_peer(registry, bin) do
    case :ets.lookup(registry, :rand.uniform(:ets.info(registry, :size) - 1)) do
      [{_, pid}] -> send(pid, {:bin, bin})
      [] -> :ok
    end
  end

  defp kill_loop(registry, n, kills) do
    receive do
      {:stop, from} -> send(from, {:killed, kills})
    after
      :rand.uniform(20) ->
        i = :rand.uniform(n)
        [{^i, pid}] = :ets.lookup(registry, i)
        Process.exit(pid, :kill)
        start_worker(registry, i)
        kill_loop(registry, n, kills + 1)
    end
  end

  defp stop_worker(pid) do
    ref = Process.monitor(pid)
    send(pid, {:stop, self()})

    receive do
      {:stopped, ^pid} -> receive do: ({:DOWN, ^ref, _, _, _} -> :ok)
      {:DOWN, ^ref, _, _, _} -> :ok
    end
  end

  defp sample_loop(max_seen) do
    receive do
      {:stop, from} -> send(from, {:max_seen, max_seen})
    after
      1 ->
        s = Store.stats()
        sample_loop(max(max_seen, s.live_bytes + s.reserved_bytes))
    end
  end

  # The worst report of each kind, with where the process was when it was scheduled in and out.
  defp monitor_reports(acc \\ %{long_schedule: {0, nil}, long_gc: {0, nil}}) do
    receive do
      {:monitor, _pid, kind, info} when kind in [:long_schedule, :long_gc] ->
        ms = info[:timeout]
        where = {info[:in], info[:out]}

        monitor_reports(
          Map.update!(acc, kind, fn {w, _} = old -> if ms > w, do: {ms, where}, else: old end)
        )
    after
      50 -> acc
    end
  end
end
