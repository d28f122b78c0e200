defmodule Binscope.LeakScenario do
  @moduledoc """
  Processes with known binary footprints, for accounting and leak-finder tests (and benches).
  Every process here stops on `:stop`; `stop_all/1` waits until they are gone.
  """

  @doc """
  A burst-then-idle worker: creates `count` refc binaries of `size` bytes (store binaries when
  `store: true`), drops them and goes idle without collecting. Only a major GC frees them.
  Returns `{pid, bytes_dropped}` once the binaries are garbage and the worker waits, idle.
  """
  def burst_then_idle(count, size, opts \\ []) do
    parent = self()
    store? = Keyword.get(opts, :store, false)
    # Loading a module on first call can leave garbage binaries in the calling process (seen on
    # OTP 27 on a fresh peer node: an 8,720-byte and a 4,624-byte binary next to the store
    # binaries, reclaimed with them; gone once these four modules were loaded first): load what
    # the worker calls here, so that its garbage is exactly the binaries it dropped.
    for m <- [Binscope.Store, Binscope.Store.Options, Range, Function], do: Code.ensure_loaded!(m)

    pid =
      spawn(fn ->
        bins =
          for i <- 1..count do
            if store?,
              do: Binscope.Store.alloc!(size, fill: rem(i, 256), label: :leak_scenario),
              else: :binary.copy(<<rem(i, 256)>>, size)
          end

        total = Enum.reduce(bins, 0, &(byte_size(&1) + &2))
        send(parent, {:burst_done, self(), total})
        # `bins` is dead from here on, but stays on the heap until a GC.
        idle()
      end)

    receive do
      {:burst_done, ^pid, total} -> waiting(pid, total)
    after
      5_000 -> raise "burst worker did not start"
    end
  end

  # Once the worker waits in its receive: idle from here on (on its way there it still runs a
  # few reductions, which a leak scan's activity window would see).
  defp waiting(pid, total) do
    case Process.info(pid, :status) do
      # Waiting, or gone (the test then finds it missing).
      s when s in [{:status, :waiting}, nil] ->
        {pid, total}

      _ ->
        :erlang.yield()
        waiting(pid, total)
    end
  end

  @doc """
  A running process that holds a live binary of `size` bytes it made itself: it wakes every
  millisecond (so its reductions keep moving) and allocates almost nothing, so no GC runs and
  the binary stays on its young binary heap. A GC frees none of it. Returns the pid.
  """
  def busy_holder(size) do
    parent = self()

    pid =
      spawn(fn ->
        bin = :binary.copy(<<9>>, size)
        send(parent, {:holding, self()})
        tick(bin, 0)
      end)

    receive do
      {:holding, ^pid} -> pid
    after
      5_000 -> raise "busy holder did not start"
    end
  end

  defp tick(bin, n) do
    receive do
      :stop -> byte_size(bin) + n
    after
      1 -> tick(bin, n + 1)
    end
  end

  @doc "`n` idle processes that hold nothing of note."
  def idle_processes(n), do: for(_ <- 1..n, do: spawn(&idle/0))

  @doc "`n` processes that all hold the same binary `bin` (kept live)."
  def sharers(bin, n) do
    for _ <- 1..n do
      spawn(fn ->
        receive do
          :stop -> byte_size(bin)
        end
      end)
    end
  end

  @doc """
  A process that keeps only a `slice`-byte sub-binary of each of `count` binaries of `size`
  bytes: the slices pin their whole parents. Returns `{pid, parent_bytes}`.
  """
  def slice_keeper(count, size, slice) do
    parent = self()

    pid =
      spawn(fn ->
        kept =
          for i <- 1..count do
            big = :binary.copy(<<rem(i, 256)>>, size)
            binary_part(big, 0, slice)
          end

        send(parent, {:sliced, self()})

        receive do
          :stop -> length(kept)
        end
      end)

    receive do
      {:sliced, ^pid} -> {pid, count * size}
    after
      5_000 -> raise "slice keeper did not start"
    end
  end

  @doc "A GenServer that holds nothing, for identity tests."
  def gen_server do
    {:ok, pid} = Agent.start(fn -> :state end)
    pid
  end

  @doc "Stops every pid (`:stop` message, then kill) and waits until each is gone."
  def stop_all(pids) do
    for pid <- pids do
      ref = Process.monitor(pid)
      send(pid, :stop)
      Process.exit(pid, :kill)

      receive do
        {:DOWN, ^ref, :process, ^pid, _} -> :ok
      after
        5_000 -> raise "#{inspect(pid)} did not stop"
      end
    end

    :ok
  end

  defp idle do
    receive do
      :stop -> :ok
    end
  end
end
