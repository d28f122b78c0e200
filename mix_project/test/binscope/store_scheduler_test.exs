defmodule Binscope.StoreSchedulerTest do
  # Proves that no store call holds a normal scheduler for 1 ms or more: the VM's own
  # long_schedule monitor reports any process that ran that long without yielding.
  use Binscope.StoreCase, async: false

  @mib 1024 * 1024

  defp with_long_schedule_monitor(fun) do
    previous = :erlang.system_monitor(self(), [{:long_schedule, 1}])

    try do
      fun.()
      collect_reports([])
    after
      case previous do
        :undefined -> :erlang.system_monitor(:undefined)
        {pid, opts} -> :erlang.system_monitor(pid, opts)
      end
    end
  end

  defp collect_reports(acc) do
    receive do
      {:monitor, pid, :long_schedule, info} -> collect_reports([{pid, info} | acc])
    after
      100 -> Enum.reverse(acc)
    end
  end

  test "put, alloc, intern and the reports never hold a normal scheduler for 1 ms" do
    # Inputs are built before the monitor starts: building them is not the store's work.
    inputs =
      for size <- [1024, 60 * 1024, 64 * 1024, @mib, 16 * @mib], do: :binary.copy("i", size)

    worker = fn ->
      held =
        for input <- inputs, _ <- 1..3 do
          [
            Store.put!(input),
            Store.intern!(input),
            Store.alloc!(byte_size(input)),
            Store.alloc!(byte_size(input), fill: 1)
          ]
        end

      for _ <- 1..50 do
        Store.stats()
        Store.by_label()
        Store.by_owner()
        Store.live(limit: 10)
        Store.allocator()
      end

      length(held)
    end

    parent = self()

    reports =
      with_long_schedule_monitor(fn ->
        task = Task.async(fn -> send(parent, {:worker, self()}) && worker.() end)
        assert Task.await(task, 30_000) == 15
      end)

    assert_received {:worker, worker_pid}
    # The report names where the process was scheduled in and out (for a NIF that is the
    # caller's code, not the NIF), so reports are matched by the worker's pid.
    ours = for {^worker_pid, info} <- reports, do: info
    assert ours == [], "store calls held a scheduler >= 1 ms: #{inspect(ours, limit: 5)}"
  end

  test "the monitor does catch a 64 MiB copy run on a normal scheduler (the check can fail)" do
    input = :binary.copy("i", 64 * @mib)
    parent = self()

    reports =
      with_long_schedule_monitor(fn ->
        task =
          Task.async(fn ->
            send(parent, {:worker, self()})
            {:ok, bin} = Binscope.Native.store_put(input, :scheduler_check, self())
            byte_size(bin)
          end)

        assert Task.await(task, 30_000) == 64 * @mib
      end)

    assert_received {:worker, worker_pid}
    assert [_ | _] = for({^worker_pid, info} <- reports, do: info)
  end
end
