defmodule Binscope.Demo.GcPressure do
  @moduledoc """
  GC pressure of off-heap binaries, and what OTP 27 changed for NIF binaries.

  A server with a 3 MiB heap is sent a burst of 400 frames of 256 KiB and keeps only the latest.
  Its heap barely grows, so only the *virtual binary heap* (the bytes of the off-heap binaries it
  references) makes it collect and drop the older frames. Three runs side by side, each reporting
  the peak of live frame bytes during the burst and what is still alive `hold_ms` after it:

    * VM binaries (`:binary.copy/1`): the reference;
    * store binaries as Binscope makes them on this node (`Binscope.Store.GcPressure.status/0`:
      `:native` on OTP 25, `:patched` on OTP 27 and later);
    * store binaries without the remedy (OTP 27+ only): what `enif_make_resource_binary` alone
      gives there, where the server never collects and keeps the whole burst.
  """
  @behaviour Binscope.Demo

  import Binscope.Demo.Kit, only: [b: 1]
  alias Binscope.Demo.Kit
  alias Binscope.Render.Table
  alias Binscope.Store
  alias Binscope.Store.GcPressure

  @impl true
  def name, do: :gc_pressure

  @impl true
  def title,
    do: "a server that drops store binaries is collected as with VM binaries, on OTP 25 and 27+"

  @impl true
  def run(opts \\ []) do
    frames = Keyword.get(opts, :frames, 400)
    size = Keyword.get(opts, :size, 256 * 1024)
    hold_ms = Keyword.get(opts, :hold_ms, 2_000)
    heap_bytes = Keyword.get(opts, :heap_bytes, 3 * 1024 * 1024)
    status = GcPressure.status()
    labels = %{store: :demo_gc_pressure, unpatched: :demo_gc_pressure_off}
    base_vm = :erlang.memory(:binary)

    sampler =
      Kit.sampler(fn ->
        by = Store.by_label()

        %{
          vm: :erlang.memory(:binary) - base_vm,
          store: get_in(by, [labels.store, :bytes]) || 0,
          unpatched: get_in(by, [labels.unpatched, :bytes]) || 0
        }
      end)

    runs = [:vm, :store] ++ if(status.mode == :patched, do: [:unpatched], else: [])
    params = %{frames: frames, size: size, hold_ms: hold_ms, heap_bytes: heap_bytes}

    results =
      for kind <- runs, into: %{} do
        Kit.progress(opts, "#{kind}: #{frames} frames of #{b(size)} to a server")
        Kit.event(sampler, event(kind))
        {kind, burst(kind, labels, params)}
      end

    recording = Kit.stop(sampler)

    chart =
      Kit.chart(
        opts,
        "gc_pressure.svg",
        "Frames alive in a server that keeps only the latest (OTP #{status.otp_release})",
        recording,
        [
          {:vm, "VM binaries"},
          {:store, "store binaries (#{status.mode})"},
          {:unpatched, "store binaries, remedy off"}
        ]
      )

    Kit.progress(opts, ["chart: ", chart])

    %{
      otp_release: status.otp_release,
      mode: status.mode,
      frames: frames,
      size: size,
      hold_ms: hold_ms,
      runs: results,
      chart: chart
    }
  end

  defp event(:vm), do: "VM binaries"
  defp event(:store), do: "store"
  defp event(:unpatched), do: "store, remedy off"

  # One burst: a producer makes each frame and sends it, so only the server holds it.
  defp burst(kind, labels, p) do
    words = div(p.heap_bytes, Kit.word())
    server = :erlang.spawn_opt(fn -> server(nil) end, min_heap_size: words)
    live = live_fun(kind, labels)
    base = live.()
    src = :binary.copy(<<7>>, p.size)
    if kind == :unpatched, do: :ok = GcPressure.enable(false)

    {producer, ref} =
      spawn_monitor(fn ->
        peak =
          Enum.reduce(1..p.frames, 0, fn _, peak ->
            send(server, {:frame, frame(kind, src, labels)})
            # The server gets a turn between two frames in every run, so the peak measures what
            # its collections free, not how the producer's pace meets the server's scheduling.
            # (Once 256 KiB puts no longer hopped to a dirty scheduler at every frame, the store
            # run's peak read 33-71 frames against 11-15 for VM binaries in 4 runs of 4 without
            # this; the two runs' `live` probes also differ in cost. With it: 8 of 8 within 16.)
            :erlang.yield()
            max(peak, live.() - base)
          end)

        exit({:shutdown, peak})
      end)

    peak = receive do: ({:DOWN, ^ref, :process, ^producer, {:shutdown, peak}} -> peak)
    if kind == :unpatched, do: :ok = GcPressure.enable(true)
    :ok = Kit.call(server, :sync)
    {:garbage_collection, gc} = :erlang.process_info(server, :garbage_collection)
    Process.sleep(p.hold_ms)
    kept = live.() - base
    Kit.kill(server)
    %{peak: peak, kept: kept, server_minor_gcs: gc[:minor_gcs]}
  end

  defp frame(:vm, src, _labels), do: :binary.copy(src)
  defp frame(:store, src, labels), do: Store.put!(src, label: labels.store)
  defp frame(:unpatched, src, labels), do: Store.put!(src, label: labels.unpatched)

  defp live_fun(:vm, _labels), do: fn -> :erlang.memory(:binary) end

  defp live_fun(kind, labels) do
    label = Map.fetch!(labels, kind)
    fn -> get_in(Store.by_label(), [label, :bytes]) || 0 end
  end

  defp server(latest) do
    receive do
      {:frame, frame} ->
        server(frame)

      {:call, from, ref, :sync} ->
        send(from, {ref, :ok})
        server(latest)
    end
  end

  @impl true
  def render(r) do
    rows =
      for kind <- [:vm, :store, :unpatched], run = r.runs[kind] do
        [
          row_name(kind, r.mode),
          b(run.peak),
          b(run.kept),
          Kit.pct(run.kept, r.frames * r.size),
          run.server_minor_gcs
        ]
      end

    [
      "OTP #{r.otp_release}, store GC pressure: #{r.mode}. ",
      "#{r.frames} frames of #{b(r.size)} (#{b(r.frames * r.size)}) sent to a server with a ",
      "3 MiB heap that keeps only the latest; \"kept\" is measured #{r.hold_ms} ms after the burst.\n",
      Table.render(
        ["frames as", "peak alive", "kept", "kept of burst", "server minor GCs"],
        rows
      ),
      note(r),
      "Chart: #{r.chart}\n"
    ]
  end

  defp row_name(:vm, _), do: "VM binaries"
  defp row_name(:store, mode), do: "store binaries (#{mode})"
  defp row_name(:unpatched, _), do: "store, remedy off"

  defp note(%{mode: :native}),
    do:
      "\nOn this OTP the VM charges a NIF resource binary its full size itself: nothing to fix.\n"

  defp note(%{mode: :patched} = r) do
    off = r.runs.unpatched

    "\nOn OTP 27+ the VM charges a NIF resource binary only its ~72-byte magic binary: without " <>
      "the remedy the server kept #{b(off.kept)}. Binscope writes the payload size where the VM " <>
      "reads it (see Binscope.Store.GcPressure), and store binaries behave like VM binaries.\n"
  end

  defp note(r),
    do: "\nThe remedy is #{r.mode} on this node: store binaries carry no GC pressure here.\n"
end
