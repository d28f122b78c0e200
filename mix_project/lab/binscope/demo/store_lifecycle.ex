defmodule Binscope.Demo.StoreLifecycle do
  @moduledoc """
  Store binaries from birth to release, next to what the VM's own tools report for them.

  An owner process allocates `count` native binaries and shares a quarter of them with a holder
  process. The owner exits; the shared ones stay alive (the store reports them with a dead owner).
  The holder drops them and collects; the store is back to exactly its baseline. Along the way the
  table shows `:erlang.memory(:binary)` and `process_info(pid, :binary)`, which barely see the
  same bytes, `Binscope.processes/1`'s `binary_pss` summed over those processes (store binaries
  at real size, each split among its holders), and, for contrast, the same amount of ordinary
  refc binaries.
  """
  @behaviour Binscope.Demo

  alias Binscope.Render.{Format, Table}
  alias Binscope.Store

  @impl true
  def name, do: :store

  @impl true
  def title, do: "native store binaries: held, outliving their owner, released to exactly zero"

  @impl true
  def run(opts \\ []) do
    count = Keyword.get(opts, :count, 100)
    size = Keyword.get(opts, :size, 1024 * 1024)
    shared = max(div(count, 4), 1)
    label = Keyword.get(opts, :label, :demo_store)

    base = snapshot([])
    holder = spawn_holder()
    owner = spawn_owner(count, size, label, holder, shared)

    held = snapshot([owner, holder])

    ref = Process.monitor(owner)
    send(owner, :exit)
    receive do: ({:DOWN, ^ref, :process, ^owner, _} -> :ok)
    await_live(base.store_count + shared)
    orphaned = snapshot([holder])
    orphans = Store.live(label: label) |> Enum.count(&(not &1.owner_alive?))

    :ok = call(holder, :drop_and_collect)
    released = snapshot([holder])
    send(holder, :exit)

    ordinary = ordinary_binaries(count, size)
    seen = vm_seen_size(size)

    rows = [
      row("owner holds #{count} x #{Format.bytes(size)}", held, base),
      row("owner exited, holder keeps #{shared}", orphaned, base),
      row("holder dropped them + GC", released, base),
      row("(contrast) #{count} ordinary refc binaries", ordinary, base)
    ]

    %{
      count: count,
      size: size,
      shared: shared,
      rows: rows,
      orphans_reported: orphans,
      vm_seen_bytes: seen,
      final_live_delta: released.store_count - base.store_count,
      final_bytes_delta: released.store_bytes - base.store_bytes
    }
  end

  @impl true
  def render(r) do
    headers = [
      "step",
      "store live",
      "store bytes",
      ":erlang.memory(:binary) delta",
      "process_info(:binary) refs",
      "process_info(:binary) bytes",
      "Binscope binary_pss"
    ]

    rows =
      for x <- r.rows do
        [
          x.step,
          x.store_count,
          Format.bytes(x.store_bytes),
          Format.bytes(x.vm_binary_delta),
          x.pinfo_refs,
          Format.bytes(x.pinfo_bytes),
          Format.bytes(x.pss)
        ]
      end

    [
      Table.render(headers, rows),
      "\n",
      "After the owner exited, the store listed #{r.orphans_reported} binaries whose owner is dead.\n",
      "After release the store is back to its baseline: #{r.final_live_delta} entries, ",
      "#{r.final_bytes_delta} bytes.\n",
      "On OTP #{:erlang.system_info(:otp_release)} process_info(:binary) lists a native binary of ",
      "#{Format.bytes(r.size)} at #{r.vm_seen_bytes} bytes; the store and Binscope.processes ",
      "(binary_pss, summed over the processes listed) see its real size.\n"
    ]
  end

  # The size process_info(:binary) gives one store binary of `size` bytes (the VM sees the
  # resource's small magic binary, not the native bytes), read in a process holding only it.
  defp vm_seen_size(size) do
    parent = self()

    {pid, ref} =
      spawn_monitor(fn ->
        bin = Store.alloc!(size, label: :demo_store_seen)
        {:binary, [{_, seen, _}]} = Process.info(self(), :binary)
        send(parent, {:seen, self(), seen, byte_size(bin)})
      end)

    receive do
      {:seen, ^pid, seen, ^size} ->
        receive do: ({:DOWN, ^ref, :process, ^pid, _} -> seen)
    end
  end

  # The DOWN of an exiting process comes before the VM frees what it referenced (its exit
  # sends its monitors' signals, then frees its heap and off-heap binaries, and can be scheduled
  # out in between): wait, up to 2 s, until the store's live count is `live`, the binaries the
  # holder keeps. What the store then reports is read as it is, reached or not.
  defp await_live(live, deadline \\ System.monotonic_time(:millisecond) + 2_000) do
    if Store.stats().live_count > live and System.monotonic_time(:millisecond) < deadline do
      Process.sleep(1)
      await_live(live, deadline)
    end
  end

  defp row(step, snap, base) do
    %{
      step: step,
      store_count: snap.store_count - base.store_count,
      store_bytes: snap.store_bytes - base.store_bytes,
      vm_binary_delta: snap.vm_binary - base.vm_binary,
      pinfo_refs: snap.pinfo_refs,
      pinfo_bytes: snap.pinfo_bytes,
      pss: snap.pss
    }
  end

  defp snapshot(pids) do
    stats = Store.stats()

    pinfo =
      pids
      |> Enum.flat_map(fn pid ->
        case Process.info(pid, :binary) do
          {:binary, bins} -> bins
          nil -> []
        end
      end)

    %{
      store_count: stats.live_count,
      store_bytes: stats.live_bytes,
      vm_binary: :erlang.memory(:binary),
      pinfo_refs: length(pinfo),
      pinfo_bytes: pinfo |> Enum.map(fn {_, size, _} -> size end) |> Enum.sum(),
      # Binscope.processes: each binary split among its holders, store binaries at real size.
      pss: pss(pids)
    }
  end

  defp pss([]), do: 0

  defp pss(pids) do
    {:ok, records} = Binscope.processes(pids: pids)
    records |> Enum.map(& &1.binary_pss) |> Enum.sum()
  end

  defp spawn_owner(count, size, label, holder, shared) do
    parent = self()

    pid =
      spawn(fn ->
        bins = for i <- 1..count, do: Store.alloc!(size, fill: rem(i, 255) + 1, label: label)
        :ok = call(holder, {:keep, Enum.take(bins, shared)})
        send(parent, {:owner_ready, self()})

        # `bins` is used after the receive, so the binaries stay live on this heap until :exit
        # (unused, a collection of this process while it waits would free the unshared ones).
        receive do
          :exit -> length(bins)
        end
      end)

    receive do: ({:owner_ready, ^pid} -> pid)
  end

  defp spawn_holder do
    spawn(fn -> holder_loop([]) end)
  end

  defp holder_loop(kept) do
    receive do
      {:call, from, ref, {:keep, bins}} ->
        send(from, {ref, :ok})
        holder_loop(bins ++ kept)

      {:call, from, ref, :drop_and_collect} ->
        # Dropping the list is not enough: the ProcBins stay on this heap until a GC.
        :erlang.garbage_collect()
        send(from, {ref, :ok})
        holder_loop([])

      :exit ->
        :ok
    end
  end

  defp call(pid, msg) do
    ref = make_ref()
    send(pid, {:call, self(), ref, msg})
    receive do: ({^ref, reply} -> reply)
  end

  # The same bytes as ordinary refc binaries, measured while a process holds them.
  defp ordinary_binaries(count, size) do
    parent = self()

    pid =
      spawn(fn ->
        bins = for i <- 1..count, do: :binary.copy(<<rem(i, 255) + 1>>, size)
        send(parent, {:ordinary_ready, self()})

        receive do
          :exit -> length(bins)
        end
      end)

    receive do: ({:ordinary_ready, ^pid} -> :ok)
    snap = snapshot([pid])
    send(pid, :exit)
    snap
  end
end
