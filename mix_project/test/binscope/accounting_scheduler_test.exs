defmodule Binscope.AccountingSchedulerTest do
  # Whole-node scans must not hold a normal scheduler for 1 ms or more: the collector runs in
  # the caller and yields like any Erlang code (no large message copy between processes), and
  # attribution runs on a dirty scheduler. The VM's long_schedule monitor reports any process that ran 1 ms without yielding;
  # reports are kept for the processes that do the scan (the caller and anything spawned during
  # it), not for the scanned processes, which do not run.
  use Binscope.StoreCase, async: false

  alias Binscope.LeakScenario, as: S
  alias Binscope.SchedulerProof

  @procs 20_000

  # Reports for the caller and for processes the scan starts (the scanned ones do not run).
  defp long_schedules_during(fun) do
    before = MapSet.new(Process.list())
    me = self()
    SchedulerProof.long_schedules(fun, &(&1 == me or not MapSet.member?(before, &1)))
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

    # One clean attempt out of three: see Binscope.SchedulerProof (OS preemption).
    outcome =
      SchedulerProof.clean_within(SchedulerProof.attempts(), fn ->
        {results, reports} = scans.()
        assert Enum.all?(results, &match?({:ok, _}, &1))
        reports
      end)

    assert outcome == :clean,
           "scans held a scheduler >= 1 ms on #{SchedulerProof.attempts()} attempts: #{inspect(outcome, limit: :infinity)}"

    S.stop_all(idle ++ leakers)
  end
end
