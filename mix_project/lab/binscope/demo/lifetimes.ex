defmodule Binscope.Demo.Lifetimes do
  @moduledoc """
  Short-lived and long-lived processes handle the same jobs differently.

  Each job makes a store-backed payload (exactly counted by `Binscope.Store`) and some heap
  garbage, and returns a checksum. First every job runs in its own short-lived worker: the
  worker's exit frees its whole heap at once, with no GC, and its payload with it. Then one
  long-lived server runs the same jobs: it keeps its garbage, payloads included, until its next
  GC; idle after the last job, it keeps it indefinitely. A manual GC then frees it. The server's
  binaries are shown as `process_info(:binary)` lists them (store binaries at a few dozen bytes) and as
  `Binscope.processes/1` counts them (`binary_uss`, at real size).
  """
  @behaviour Binscope.Demo

  import Binscope.Demo.Kit, only: [b: 1]
  alias Binscope.Demo.Kit
  alias Binscope.Render.Table
  alias Binscope.Store

  @impl true
  def name, do: :lifetimes

  @impl true
  def title,
    do:
      "short-lived workers give everything back at exit; a long-lived server keeps garbage until it collects"

  @impl true
  def run(opts \\ []) do
    scale = Keyword.get(opts, :scale, 1.0)
    jobs = max(round(600 * scale), 20)
    size = Keyword.get(opts, :size, 128 * 1024)
    label = Keyword.get(opts, :label, :demo_lifetimes)
    server_pid = :ets.new(:lifetimes_server, [:public])

    sampler =
      Kit.sampler(fn ->
        server =
          case :ets.lookup(server_pid, :pid) do
            [{_, p}] -> Kit.proc(p)
            _ -> nil
          end

        %{store: label_bytes(label), server_heap: server && server.heap}
      end)

    Kit.progress(opts, "#{jobs} jobs in short-lived workers")
    Kit.event(sampler, "workers start")
    results_w = for i <- 1..jobs, do: in_worker(fn -> job(i, size, label) end)
    after_workers = Kit.eventually(fn -> label_count(label) == 0 end) && label_stats(label)
    after_workers = after_workers || label_stats(label)
    Kit.event(sampler, "workers done")

    Kit.progress(opts, "the same #{jobs} jobs in one long-lived server")
    server = spawn(fn -> server_loop(label, size) end)
    :ets.insert(server_pid, {:pid, server})
    Kit.event(sampler, "server start")
    results_s = for i <- 1..jobs, do: Kit.call(server, {:job, i})
    Kit.event(sampler, "server idle")
    Process.sleep(Keyword.get(opts, :idle_ms, 200))
    idle = label_stats(label) |> Map.merge(Kit.proc(server))
    Kit.event(sampler, "manual GC")
    {gc_us, true} = :timer.tc(fn -> :erlang.garbage_collect(server) end)
    # The collection drops the references; the VM runs the resources' destructors after it (as
    # aux work), so the store's figures follow a moment later, as after the workers.
    _ = Kit.eventually(fn -> label_count(label) == 0 end)
    collected = label_stats(label) |> Map.merge(Kit.proc(server))
    Kit.kill(server)
    Kit.event(sampler, "exit")
    recording = Kit.stop(sampler)
    :ets.delete(server_pid)

    peak = fn from, to ->
      recording.samples
      |> Enum.filter(fn {t, _} -> t >= from and t <= to end)
      |> Enum.map(fn {_, s} -> s.store end)
      |> Enum.max(fn -> 0 end)
    end

    ev = Map.new(recording.events, fn {t, l} -> {l, t} end)

    chart =
      Kit.chart(
        opts,
        "lifetimes.svg",
        "Lifetimes: workers vs a long-lived server (same jobs)",
        recording,
        [
          {:store, "payload bytes alive (store)"},
          {:server_heap, "server total heap"}
        ]
      )

    Kit.progress(opts, ["chart: ", chart])

    %{
      jobs: jobs,
      size: size,
      same_results?: results_w == results_s,
      after_workers: after_workers,
      workers_peak: peak.(ev["workers start"], ev["workers done"]),
      server_peak: peak.(ev["server start"], ev["server idle"]),
      server_idle: idle,
      server_collected: collected,
      gc_us: gc_us,
      chart: chart
    }
  end

  # One job: a payload in the store, some heap garbage, a small result.
  defp job(i, size, label) do
    payload = Store.alloc!(size, fill: rem(i, 250) + 1, label: label)
    garbage = Enum.map(1..2_000, &{&1, i})
    :erlang.crc32(payload) + length(garbage)
  end

  defp in_worker(fun) do
    {pid, ref} = spawn_monitor(fn -> exit({:result, fun.()}) end)
    receive do: ({:DOWN, ^ref, :process, ^pid, {:result, r}} -> r)
  end

  defp server_loop(label, size) do
    receive do
      {:call, from, ref, {:job, i}} ->
        send(from, {ref, job(i, size, label)})
        server_loop(label, size)
    end
  end

  defp label_stats(label) do
    s = Map.get(Store.by_label(), label, %{count: 0, bytes: 0})
    %{store_count: s.count, store_bytes: s.bytes}
  end

  defp label_count(label), do: label_stats(label).store_count
  defp label_bytes(label), do: label_stats(label).store_bytes

  @impl true
  def render(r) do
    w = r.after_workers
    i = r.server_idle
    c = r.server_collected

    [
      Table.render(
        [
          "after #{r.jobs} jobs of #{b(r.size)}",
          "payloads still alive",
          "payload bytes alive",
          "peak payload bytes",
          "process heap",
          "process_info(:binary) bytes",
          "Binscope binary_uss"
        ],
        [
          [
            "short-lived workers, all exited",
            w.store_count,
            b(w.store_bytes),
            b(r.workers_peak),
            "0 B (no process)",
            "",
            ""
          ],
          [
            "long-lived server, idle",
            i.store_count,
            b(i.store_bytes),
            b(r.server_peak),
            b(i.heap),
            b(i.bin_bytes),
            b(i.bin_uss)
          ],
          [
            "server after :erlang.garbage_collect/1",
            c.store_count,
            b(c.store_bytes),
            "",
            b(c.heap),
            b(c.bin_bytes),
            b(c.bin_uss)
          ]
        ]
      ),
      "\nSame results from both: #{r.same_results?}. Each worker's exit freed its heap and payload ",
      "without a GC; the idle server kept #{i.store_count} dead payloads (#{b(i.store_bytes)}) ",
      "until a GC of #{r.gc_us} µs freed them. process_info(:binary) listed them at ",
      "#{b(i.bin_bytes)}; Binscope.processes counted the server's binaries at #{b(i.bin_uss)}.\n",
      "Chart: #{r.chart}\n"
    ]
  end
end
