defmodule Binscope.Scanner do
  @moduledoc false
  # Whole-node scans whose result is small (`Binscope.leaks/1`, `Binscope.top/2`) run in a
  # process of their own, linked to the caller: the scan's records, replies and garbage live on
  # the scanner's heap, which dies with it (freed at once, never collected), so the caller's
  # heap is never grown by them nor copied by their collections (at a million processes the
  # scanner's heap reaches hundreds of MiB, and a collection of it takes seconds, on a dirty
  # scheduler). Only the result is copied to the caller. The scanner keeps its message queue
  # off its heap (the collector's workers send it their records in pieces).
  #
  # Results that are the whole node (`processes/1`, `snapshot/1`) stay in the caller: handing
  # them over would be one large copy that cannot be preempted.

  @doc """
  Runs `fun` in a scanner process and returns its result, raising, throwing or exiting as `fun`
  did. The scanner is linked to the caller: if the caller dies, so does the scan.
  """
  @spec run((... -> result)) :: result when result: term()
  def run(fun) do
    caller = self()
    ref = make_ref()

    {pid, mref} =
      :erlang.spawn_opt(
        fn ->
          result = capture(fun)
          # Collect before exiting: the collection (of a large heap: on a dirty scheduler)
          # keeps only the result and releases the scan's heap there. Left to the exit, the
          # release of hundreds of MiB of heap ran on a normal scheduler: 16-35 ms at 1M
          # processes.
          :erlang.garbage_collect()
          send(caller, {ref, result})
        end,
        [:link, :monitor, {:message_queue_data, :off_heap} | :binscope_collector.worker_opts()]
      )

    receive do
      {^ref, result} ->
        Process.demonitor(mref, [:flush])
        unwrap(result)

      {:DOWN, ^mref, :process, ^pid, reason} ->
        exit(reason)
    end
  end

  defp capture(fun) do
    {:ok, fun.()}
  catch
    kind, reason -> {kind, reason, __STACKTRACE__}
  end

  defp unwrap({:ok, result}), do: result
  defp unwrap({kind, reason, stack}), do: :erlang.raise(kind, reason, stack)
end
