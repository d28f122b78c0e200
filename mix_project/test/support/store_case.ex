defmodule Binscope.StoreCase do
  @moduledoc """
  Helpers for tests of store accounting. Store counters are node-global, so every test module
  that uses this case runs synchronously (`async: false`), never beside another store test.
  """
  use ExUnit.CaseTemplate

  using do
    quote do
      import Binscope.StoreCase
      alias Binscope.Store
    end
  end

  setup do
    settle()
    Binscope.Store.set_capacity(:infinity)
    on_exit(fn -> Binscope.Store.set_capacity(:infinity) end)
    :ok
  end

  @doc """
  Polls `fun` until it returns a truthy value or `timeout_ms` passes; returns the last value.
  Resource destructors run when the last holder's heap is collected or freed, which happens on
  the holder's scheduler right after its exit; a short poll covers that hand-off.
  """
  def eventually(fun, timeout_ms \\ 2_000) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    do_eventually(fun, deadline)
  end

  defp do_eventually(fun, deadline) do
    case fun.() do
      falsy when falsy in [nil, false] ->
        if System.monotonic_time(:millisecond) > deadline do
          falsy
        else
          Process.sleep(5)
          do_eventually(fun, deadline)
        end

      value ->
        value
    end
  end

  @doc """
  Waits until the store's live counters stop moving (unchanged over three polls 10 ms apart).
  A process's `DOWN` can arrive before its heap, and so its references, are freed; tests take
  their baseline only once such releases have landed.
  """
  def settle(timeout_ms \\ 2_000) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    do_settle(live(), 0, deadline)
  end

  defp do_settle(last, 3, _deadline), do: last

  defp do_settle(last, same, deadline) do
    Process.sleep(10)
    now = live()

    cond do
      System.monotonic_time(:millisecond) > deadline -> now
      now == last -> do_settle(now, same + 1, deadline)
      true -> do_settle(now, 0, deadline)
    end
  end

  @doc "Live count and bytes of the store right now."
  def live, do: Binscope.Store.stats() |> Map.take([:live_count, :live_bytes])

  @doc """
  Runs `fun` in a fresh process and returns its result, after the process has exited (so any
  store binary that only it referenced is released). Results must not contain store binaries.
  """
  def in_process(fun) do
    {pid, ref} = spawn_monitor(fn -> exit({:shell_result, fun.()}) end)

    receive do
      {:DOWN, ^ref, :process, ^pid, {:shell_result, result}} ->
        settle()
        result

      {:DOWN, ^ref, :process, ^pid, reason} ->
        raise "helper process died: #{inspect(reason)}"
    end
  end

  @doc """
  A process that keeps whatever it is sent until told to drop it; returns its pid. It also ends
  when the process that started it does, so a test that fails half-way leaves no holder (and
  no held bytes) behind for the next test's baseline. Not linked: tests kill holders.
  """
  def holder do
    parent = self()
    spawn(fn -> holder_loop([], Process.monitor(parent)) end)
  end

  defp holder_loop(kept, parent) do
    receive do
      {:keep, term} ->
        holder_loop([term | kept], parent)

      {:drop, from} ->
        :erlang.garbage_collect()
        send(from, {:dropped, self()})
        holder_loop([], parent)

      {:sync, from} ->
        send(from, {:synced, self()})
        holder_loop(kept, parent)

      :stop ->
        :ok

      {:DOWN, ^parent, :process, _, _} ->
        :ok
    end
  end

  @doc "Waits until `pid` has processed every message sent before this call."
  def sync(pid) do
    send(pid, {:sync, self()})
    assert_receive {:synced, ^pid}, 5_000
    :ok
  end

  @doc "Tells a holder to drop everything and collect, and waits for it."
  def drop_all(pid) do
    send(pid, {:drop, self()})
    assert_receive {:dropped, ^pid}, 5_000
    :ok
  end

  @doc "Stops `pid` and waits until it is gone."
  def stop(pid) do
    ref = Process.monitor(pid)
    send(pid, :stop)
    assert_receive {:DOWN, ^ref, :process, ^pid, _}, 5_000
    :ok
  end
end
