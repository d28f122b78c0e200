defmodule Binscope.SchedulerProof do
  @moduledoc """
  Proof that code does not hold a normal scheduler: the VM's `long_schedule` monitor (1 ms)
  reports every process that ran that long without being scheduled out.

  long_schedule measures wall time, so when the OS takes a core away from a scheduler thread (2
  cores, more runnable threads than that on a loaded machine), whatever process runs then is
  reported too. Code that really holds its scheduler is reported on every attempt; an OS
  preemption rarely repeats. `clean_within/2` therefore asks for one clean attempt out of
  `attempts/0`.

  How often the OS does it, on a freshly booted 2-core machine (2026-12-01): two processes
  spinning plain Erlang code were reported 102 times in 20 s (2-10 ms); the ETS reader of
  `external_test.exs`, timed step by step outside the monitor, never passed 0.54 ms in a step
  while the monitor reported it at 2-4 ms in each of 3 attempts, once in 3 runs of the test.
  """

  # Enough that OS preemptions (above) almost never hit every attempt; a real hold still does.
  @attempts 6

  @doc "How many attempts `clean_within/2` callers give a proof."
  def attempts, do: @attempts

  @doc """
  Runs `fun` with the monitor on, beside a control process that spins plain Erlang code (it
  never holds its scheduler by itself, so its own reports are the OS taking a core away);
  returns `{result, reports}`: the `{pid, info}` for which `keep?.(pid)` is true and that ran
  longer than the control's longest report in the same run. On a quiet machine the control has
  none and every report of 1 ms or more counts; on a loaded one a real hold still stands out
  (the 64 MiB put on a normal scheduler in `store_scheduler_test.exs`: tens of ms, every time).
  """
  def long_schedules(fun, keep?) do
    control = spawn(fn -> spin(0) end)
    previous = :erlang.system_monitor(self(), [{:long_schedule, 1}])

    try do
      result = fun.()
      {result, collect([], 0, control, keep?)}
    after
      case previous do
        :undefined -> :erlang.system_monitor(:undefined)
        {pid, opts} -> :erlang.system_monitor(pid, opts)
      end

      Process.exit(control, :kill)
    end
  end

  defp spin(n), do: spin(rem(n + 1, 1_000_000))

  defp collect(acc, worst, control, keep?) do
    receive do
      {:monitor, ^control, :long_schedule, info} ->
        collect(acc, max(worst, info[:timeout]), control, keep?)

      {:monitor, pid, :long_schedule, info} ->
        if keep?.(pid),
          do: collect([{pid, info} | acc], worst, control, keep?),
          else: collect(acc, worst, control, keep?)
    after
      100 -> acc |> Enum.reverse() |> Enum.filter(fn {_, info} -> info[:timeout] > worst end)
    end
  end

  @doc """
  Calls `attempt` (which returns a list of reports) up to `n` times; `:clean` as soon as one
  returns `[]`, otherwise the reports of every attempt, newest first.
  """
  def clean_within(n, attempt) do
    Enum.reduce_while(1..n, [], fn _, acc ->
      case attempt.() do
        [] -> {:halt, :clean}
        reports -> {:cont, [reports | acc]}
      end
    end)
  end
end
