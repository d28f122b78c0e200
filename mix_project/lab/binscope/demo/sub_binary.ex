defmodule Binscope.Demo.SubBinary do
  @moduledoc """
  A small slice of a large binary is a sub-binary: a pointer into its parent, which it keeps
  alive whole. A process that keeps a 200-byte slice of each of `count` large payloads and drops
  the payloads still pins every payload byte, even after a GC. `:binary.copy/1` of the slice
  makes a small independent binary; after a GC the parents are released.

  The payloads are store-backed, so the store counts the pinned bytes exactly, and so does
  `Binscope.processes/1` (`binary_uss`), per process. (Slices of 64
  bytes or less behave differently: the GC copies them into heap binaries, so they stop pinning
  their parent at the first GC; measured while building this demo.)
  """
  @behaviour Binscope.Demo

  import Binscope.Demo.Kit, only: [b: 1]
  alias Binscope.Demo.Kit
  alias Binscope.Render.Table
  alias Binscope.Store

  @impl true
  def name, do: :sub_binary

  @impl true
  def title, do: "a 200-byte slice pins its whole parent; :binary.copy/1 releases it"

  # Above 64 bytes: measured here, the GC copies sub-binaries of 64 bytes or less into heap
  # binaries, so such tiny slices stop pinning at the first GC; larger ones stay sub-binaries.
  @slice 200

  @impl true
  def run(opts \\ []) do
    scale = Keyword.get(opts, :scale, 1.0)
    count = max(round(50 * scale), 5)
    size = Keyword.get(opts, :size, 1024 * 1024)
    label = Keyword.get(opts, :label, :demo_sub_binary)
    # Each phase is held this long, so the chart shows its plateau (the phases themselves take
    # well under a millisecond: without a hold they were squeezed into the chart's last 0.3 ms).
    hold = Keyword.get(opts, :phase_ms, 60)

    stats = fn -> Map.get(Store.by_label(), label, %{count: 0, bytes: 0}) end
    sampler = Kit.sampler(fn -> %{store: stats.().bytes} end)
    keeper = spawn(fn -> keeper_loop([]) end)

    Kit.event(sampler, "payloads made")

    # A short-lived producer makes the payloads, so only the keeper references them.
    {producer, ref} =
      spawn_monitor(fn ->
        for i <- 1..count do
          send(keeper, {:payload, Store.alloc!(size, fill: rem(i, 250) + 1, label: label)})
        end
      end)

    receive do: ({:DOWN, ^ref, :process, ^producer, :normal} -> :ok)

    :ok = Kit.call(keeper, :sync)
    held = row("keeper holds #{count} payloads", keeper, stats)
    Process.sleep(hold)
    Kit.event(sampler, "keep #{@slice}-byte slices, drop payloads, GC")
    :ok = Kit.call(keeper, :slice)
    sliced = row("keeps only #{@slice}-byte slices (after GC)", keeper, stats)
    referenced = Kit.call(keeper, :referenced)
    Process.sleep(hold)
    Kit.event(sampler, ":binary.copy slices, GC")
    :ok = Kit.call(keeper, :copy)
    copied = row("slices copied with :binary.copy/1 (after GC)", keeper, stats)
    referenced_after = Kit.call(keeper, :referenced)
    Process.sleep(hold)
    Kit.kill(keeper)
    recording = Kit.stop(sampler)

    chart =
      Kit.chart(opts, "sub_binary.svg", "Sub-binaries pin their parents", recording, [
        {:store, "payload bytes alive (store)"}
      ])

    Kit.progress(opts, ["chart: ", chart])

    %{
      count: count,
      size: size,
      rows: [held, sliced, copied],
      referenced: referenced,
      referenced_after: referenced_after,
      recording: recording,
      chart: chart
    }
  end

  defp row(step, pid, stats) do
    s = stats.()
    p = Kit.proc(pid)

    %{
      step: step,
      store_count: s.count,
      store_bytes: s.bytes,
      bin_refs: p.bin_refs,
      bin_uss: p.bin_uss
    }
  end

  defp keeper_loop(kept) do
    receive do
      {:payload, bin} ->
        keeper_loop([bin | kept])

      {:call, from, ref, :sync} ->
        send(from, {ref, :ok})
        keeper_loop(kept)

      {:call, from, ref, :slice} ->
        slices = Enum.map(kept, &binary_part(&1, 100, @slice))
        :erlang.garbage_collect()
        send(from, {ref, :ok})
        keeper_loop(slices)

      {:call, from, ref, :copy} ->
        copies = Enum.map(kept, &:binary.copy/1)
        :erlang.garbage_collect()
        send(from, {ref, :ok})
        keeper_loop(copies)

      {:call, from, ref, :referenced} ->
        send(from, {ref, kept |> Enum.map(&:binary.referenced_byte_size/1) |> Enum.sum()})
        keeper_loop(kept)
    end
  end

  @impl true
  def render(r) do
    kept = r.count * @slice

    [
      Table.render(
        [
          "step",
          "payloads alive",
          "payload bytes alive",
          "binary refs on the heap",
          "Binscope binary_uss"
        ],
        Enum.map(
          r.rows,
          &[&1.step, &1.store_count, b(&1.store_bytes), &1.bin_refs, b(&1.bin_uss)]
        )
      ),
      "\n#{r.count} slices hold #{b(kept)} of data but pin #{b(Enum.at(r.rows, 1).store_bytes)} ",
      "(the VM's :binary.referenced_byte_size/1 sums to #{b(r.referenced)}: it sees ",
      "#{Kit.store_listing()}; Binscope.processes counts ",
      "#{b(Enum.at(r.rows, 1).bin_uss)} held by the keeper alone). After :binary.copy/1 ",
      "they reference #{b(r.referenced_after)} and the payloads are gone.\n",
      "Chart: #{r.chart}\n"
    ]
  end
end
