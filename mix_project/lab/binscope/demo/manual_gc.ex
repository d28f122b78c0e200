defmodule Binscope.Demo.ManualGc do
  @moduledoc """
  A long-lived process that "leaks" refc binaries: it receives a burst of messages carrying
  large binaries and buffers them (a batch), then flushes the batch, dropping every binary, and
  goes idle. Dropped binaries stay referenced from its heap until its next GC (those that
  survived a GC while buffered sit in the old generation, which only a major GC collects), and
  an idle process does not collect. `:erlang.garbage_collect/1`
  frees them; the demo reports the bytes before and after and the GC's own cost.

  Half of each message is an ordinary refc binary (seen by `process_info(:binary)` and
  `:erlang.memory(:binary)`), half a store-backed one, whose release the store records at the
  exact moment of the GC. Three views side by side: `process_info(:binary)` (store binaries at a
  few dozen bytes), `Binscope.processes/1`'s `binary_uss` (store binaries at real size), and what
  `Binscope.leaks(mode: :dry_run)` estimates a GC would free, before the GC runs.
  """
  @behaviour Binscope.Demo

  import Binscope.Demo.Kit, only: [b: 1]
  alias Binscope.Demo.Kit
  alias Binscope.Render.Table
  alias Binscope.Store

  @impl true
  def name, do: :manual_gc

  @impl true
  def title,
    do:
      "a long-lived process keeps dropped binaries until it collects; :erlang.garbage_collect/1 frees them"

  @impl true
  def run(opts \\ []) do
    scale = Keyword.get(opts, :scale, 1.0)
    count = max(round(200 * scale), 10)
    size = Keyword.get(opts, :size, 256 * 1024)
    label = Keyword.get(opts, :label, :demo_manual_gc)

    base_vm = :erlang.memory(:binary)
    leaky = spawn(fn -> leaky_loop([]) end)

    sampler =
      Kit.sampler(fn ->
        p = Kit.proc(leaky) || %{}
        s = Map.get(Store.by_label(), label, %{bytes: 0})

        %{
          pinfo: p[:bin_bytes],
          uss: p[:bin_uss],
          store: s.bytes,
          vm: :erlang.memory(:binary) - base_vm
        }
      end)

    Kit.progress(
      opts,
      "burst: #{count} messages, each #{b(size)} ordinary + #{b(size)} store-backed"
    )

    Kit.event(sampler, "burst")

    # A short-lived producer makes and sends the payloads, so only `leaky` references them, and
    # asks for the flush itself: its messages reach `leaky` in order, where a flush sent from
    # here could overtake the last payload (one of 20 was missing from the count once).
    {producer, ref} =
      spawn_monitor(fn ->
        Enum.each(1..count, fn i ->
          ordinary = :binary.copy(<<rem(i, 250) + 1>>, size)
          native = Store.alloc!(size, fill: rem(i, 250) + 1, label: label)
          send(leaky, {:payload, ordinary, native})
        end)

        :ok = Kit.call(leaky, :flush)
      end)

    receive do: ({:DOWN, ^ref, :process, ^producer, :normal} -> :ok)
    Kit.event(sampler, "flush (all dropped), idle")
    Process.sleep(Keyword.get(opts, :idle_ms, 300))
    before = snapshot(leaky, label, base_vm)
    {estimate, rank} = dry_run(leaky)
    Kit.event(sampler, "manual GC")
    {gc_us, true} = :timer.tc(fn -> :erlang.garbage_collect(leaky) end)
    after_gc = snapshot(leaky, label, base_vm)
    Kit.sample_now(sampler)
    Process.sleep(50)
    Kit.kill(leaky)
    recording = Kit.stop(sampler)

    chart =
      Kit.chart(
        opts,
        "manual_gc.svg",
        "Manual GC of an idle process that dropped its binaries",
        recording,
        [
          {:pinfo, "process_info(:binary) bytes"},
          {:uss, "Binscope binary_uss"},
          {:store, "store-backed bytes alive"},
          {:vm, ":erlang.memory(:binary) delta"}
        ]
      )

    Kit.progress(opts, ["chart: ", chart])

    %{
      count: count,
      size: size,
      dropped: count * size,
      before: before,
      after: after_gc,
      dry_run_estimate: estimate,
      dry_run_rank: rank,
      reclaimed: before.uss - after_gc.uss,
      gc_us: gc_us,
      chart: chart
    }
  end

  defp leaky_loop(batch) do
    receive do
      {:payload, ordinary, native} ->
        leaky_loop([{ordinary, native} | batch])

      {:call, from, ref, :flush} ->
        # Summarise the batch and drop it: every binary is now garbage.
        _sum =
          Enum.reduce(batch, 0, fn {o, n}, acc -> acc + :binary.first(o) + :binary.last(n) end)

        send(from, {ref, :ok})
        leaky_loop([])
    end
  end

  # What the leak finder's dry run (no GC) estimates for `pid`, and its rank in that list.
  defp dry_run(pid) do
    {:ok, ranked} = Binscope.leaks(mode: :dry_run, limit: 100)

    case Enum.find_index(ranked, &(&1.pid == pid)) do
      nil -> {nil, nil}
      i -> {Enum.at(ranked, i).estimated_bytes, i + 1}
    end
  end

  defp snapshot(pid, label, base_vm) do
    p = Kit.proc(pid)
    s = Map.get(Store.by_label(), label, %{count: 0, bytes: 0})

    %{
      # Ordinary binaries only: store-backed ones are listed at a few dozen bytes each.
      pinfo_bytes: p.bin_bytes,
      pinfo_refs: p.bin_refs,
      # Store-backed ones at their real size: what this process alone keeps alive.
      uss: p.bin_uss,
      store_count: s.count,
      store_bytes: s.bytes,
      vm_delta: :erlang.memory(:binary) - base_vm,
      heap: p.heap
    }
  end

  @impl true
  def render(r) do
    row = fn name, s ->
      [
        name,
        s.pinfo_refs,
        b(s.pinfo_bytes),
        b(s.uss),
        s.store_count,
        b(s.store_bytes),
        b(s.vm_delta)
      ]
    end

    freed = r.before.pinfo_bytes - r.after.pinfo_bytes
    estimate = if r.dry_run_estimate, do: b(r.dry_run_estimate), else: "n/a (not ranked)"

    [
      Table.render(
        [
          "idle process",
          "binary refs",
          "process_info(:binary) bytes",
          "Binscope binary_uss",
          "store entries",
          "store bytes",
          ":erlang.memory(:binary) delta"
        ],
        [
          row.("batch flushed (dropped), idle", r.before),
          row.("after :erlang.garbage_collect/1", r.after)
        ]
      ),
      "\nThe process dropped #{b(r.dropped)} of ordinary binaries and as much store-backed. ",
      "Idle, process_info(:binary) still listed #{b(r.before.pinfo_bytes)} (#{Kit.store_listing()}); ",
      "Binscope.processes counted #{b(r.before.uss)} held by it alone. ",
      "Binscope.leaks(mode: :dry_run), without collecting, ranked it ##{r.dry_run_rank || "-"} and estimated ",
      "#{estimate}. The manual GC took #{r.gc_us} µs and reclaimed #{b(r.reclaimed)} ",
      "(#{Kit.pct(r.reclaimed, 2 * r.dropped)} of all it dropped; process_info saw #{b(freed)} go); ",
      "the store saw #{r.before.store_count - r.after.store_count} entries released at that moment.\n",
      "Chart: #{r.chart}\n"
    ]
  end
end
