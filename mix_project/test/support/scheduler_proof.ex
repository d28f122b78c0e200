defmodule Binscope.SchedulerProof do
  @moduledoc """
  Proof that code does not hold a normal scheduler: the VM's `long_schedule` monitor (1 ms)
  reports every process that ran that long without being scheduled out.

  long_schedule measures wall time, so when the OS takes a core away from a scheduler thread (2
  cores, more runnable threads than that on a loaded machine), whatever process runs then is
  reported too. Code that really holds its scheduler is reported on every attempt; an OS
  preemption rarely repeats. `clean_within/2` therefore asks for one clean attempt out of a few.
  """

  @doc """
  Runs `fun` with the monitor on; returns `{result, reports}` where `reports` are the
  `{pid, info}` for which `keep?.(pid)` is true.
  """
  def long_schedules(fun, keep?) do
    previous = :erlang.system_monitor(self(), [{:long_schedule, 1}])

    try do
      result = fun.()
      {result, collect([], keep?)}
    after
      case previous do
        :undefined -> :erlang.system_monitor(:undefined)
        {pid, opts} -> :erlang.system_monitor(pid, opts)
      end
    end
  end

  defp collect(acc, keep?) do
    receive do
      {:monitor, pid, :long_schedule, info} ->
        if keep?.(pid), do: collect([{pid, info} | acc], keep?), else: collect(acc, keep?)
    after
      100 -> Enum.reverse(acc)
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
