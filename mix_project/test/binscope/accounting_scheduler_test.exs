defmodule Binscope.AccountingSchedulerTest do
  # Whole-node scans must not hold a normal scheduler for 1 ms or more: the collector yields
  # like any Erlang code, hands its results over in chunks, and attribution runs on a dirty
  # scheduler. The VM's long_schedule monitor reports any process that ran 1 ms without yielding;
  # reports are kept for the processes that do the scan (the caller and anything spawned during
  # it), not for the scanned processes, which do not run.
  use Binscope.StoreCase, async: false

  alias Binscope.LeakScenario, as: S

  @procs 20_000

  defp long_schedules_during(fun) do
    before = MapSet.new(Process.list())
    previous = :erlang.system_monitor(self(), [{:long_schedule, 1}])

    try do
      result = fun.()
      {result, collect([], before)}
    after
      case previous do
        :undefined -> :erlang.system_monitor(:undefined)
        {pid, opts} -> :erlang.system_monitor(pid, opts)
      end
    end
  end

  defp collect(acc, before) do
    receive do
      {:monitor, pid, :long_schedule, info} ->
        if pid == self() or not MapSet.member?(before, pid),
          do: collect([{pid, info} | acc], before),
          else: collect(acc, before)
    after
      100 -> Enum.reverse(acc)
    end
  end

  @tag timeout: 120_000
  test "processes, snapshot, top and every leaks mode over #{@procs} processes" do
    idle = S.idle_processes(@procs)
    leakers = for n <- 1..3, do: elem(S.burst_then_idle(4, n * 1_048_576), 0)

    scans = fn ->
      long_schedules_during(fn ->
        [
          Binscope.processes(),
          Binscope.snapshot(),
          Binscope.processes(detail: :basic),
          Binscope.top(10, by: :binary_uss),
          Binscope.leaks(mode: :dry_run),
          Binscope.leaks(),
          Binscope.leaks(mode: :full)
        ]
      end)
    end

    # As in the store's scheduler test: an OS preemption of a scheduler thread shows as
    # long_schedule too, so one of up to three attempts must be clean; a scan that really holds
    # its scheduler is reported on every attempt.
    outcome =
      Enum.reduce_while(1..3, [], fn _, acc ->
        {results, reports} = scans.()
        assert Enum.all?(results, &match?({:ok, _}, &1))
        if reports == [], do: {:halt, :clean}, else: {:cont, [reports | acc]}
      end)

    assert outcome == :clean,
           "scans held a scheduler >= 1 ms on 3 attempts: #{inspect(outcome, limit: :infinity)}"

    S.stop_all(idle ++ leakers)
  end
end
