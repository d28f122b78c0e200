defmodule Binscope.Demo.Heaps do
  @moduledoc """
  Every process has its own heap, collected on its own, in generations.

  Part 1 (promotion, exact): a process allocates a list; a first minor GC keeps it in the young
  heap (it survived once), a second promotes it to the old heap; only a major GC shrinks the old
  heap again.

  Part 2 (growth): a process grows a kept list step by step while making garbage; the demo counts
  its minor and major GCs (GC tracing) as its heap grows. An idle neighbour process is sampled
  alongside: its heap and GC count do not move, because nothing is shared.
  """
  @behaviour Binscope.Demo

  import Binscope.Demo.Kit, only: [b: 1]
  alias Binscope.Demo.Kit
  alias Binscope.Render.Table

  @impl true
  def name, do: :heaps

  @impl true
  def title, do: "one heap per process; minor and major GCs; generational promotion"

  @impl true
  def run(opts \\ []) do
    scale = Keyword.get(opts, :scale, 1.0)
    list_len = max(round(20_000 * scale), 1_000)
    steps = max(round(30 * scale), 5)
    per_step = max(round(40_000 * scale), 1_000)

    promotion = promotion(list_len)
    growth = growth(steps, per_step, opts)
    Map.merge(%{list_len: list_len, promotion: promotion}, growth)
  end

  # Part 1: one list, two minor GCs, then a major GC; heap/old heap used sizes read each time.
  defp promotion(len) do
    # A young heap big enough that building the list needs no GC: it starts all young.
    pid =
      :erlang.spawn_opt(
        fn ->
          list = Enum.to_list(1..len)

          receive do
            :stop -> length(list)
          end
        end,
        min_heap_size: len * 4 + 1_000
      )

    read = fn step ->
      Process.sleep(0)
      {:garbage_collection_info, g} = Process.info(pid, :garbage_collection_info)
      %{step: step, young: g[:heap_size] * Kit.word(), old: g[:old_heap_size] * Kit.word()}
    end

    # Make sure the list is built before reading.
    wait_built(pid)
    r0 = read.("list of #{len} integers built (+ building garbage)")
    true = :erlang.garbage_collect(pid, type: :minor)
    r1 = read.("1st minor GC (survived once: stays young)")
    true = :erlang.garbage_collect(pid, type: :minor)
    r2 = read.("2nd minor GC (survived twice: promoted)")
    true = :erlang.garbage_collect(pid)
    r3 = read.("major GC (old heap collected too)")
    send(pid, :stop)
    %{rows: [r0, r1, r2, r3], list_bytes: len * 2 * Kit.word()}
  end

  defp wait_built(pid) do
    case Process.info(pid, :status) do
      {:status, :waiting} -> :ok
      _ -> Process.sleep(1) && wait_built(pid)
    end
  end

  # Part 2: a grower beside an idle neighbour.
  defp growth(steps, per_step, opts) do
    grower = spawn(fn -> grow_loop([]) end)
    idle = spawn(fn -> receive(do: (:stop -> :ok)) end)
    idle_before = Kit.proc(idle)

    sampler =
      Kit.sampler(fn ->
        g = blocks(grower) || %{}
        i = Kit.proc(idle) || %{}
        %{young: g[:young], old: g[:old], idle: i[:heap]}
      end)

    Kit.trace_gc(sampler, grower)
    Kit.progress(opts, "growing a process by #{steps} x #{per_step} list cells")

    rows =
      for step <- 1..steps do
        :ok = Kit.call(grower, {:grow, per_step})
        {minor, major} = Kit.gc_counts(sampler, grower)
        g = blocks(grower)
        i = Kit.proc(idle)

        %{
          kept: step * per_step,
          young: g.young,
          old: g.old,
          minor: minor,
          major: major,
          idle_heap: i.heap,
          idle_gcs: i.minor_gcs
        }
      end

    Kit.event(sampler, "exit")
    Kit.kill(grower)
    recording = Kit.stop(sampler)
    idle_after = Kit.proc(idle)
    send(idle, :stop)

    chart =
      Kit.chart(opts, "heaps.svg", "Heaps: a growing process beside an idle one", recording, [
        {:young, "grower young heap"},
        {:old, "grower old heap"},
        {:idle, "idle neighbour heap"}
      ])

    Kit.progress(opts, ["chart: ", chart])

    %{
      steps: steps,
      per_step: per_step,
      growth: rows,
      idle_before: idle_before,
      idle_after: idle_after,
      chart: chart
    }
  end

  # The young and old generation blocks (what the heap occupies, in use or not); their sum is the
  # total heap of `Binscope.processes/1`, which does not split it.
  defp blocks(pid) do
    case Process.info(pid, :garbage_collection_info) do
      {:garbage_collection_info, g} ->
        %{young: g[:heap_block_size] * Kit.word(), old: g[:old_heap_block_size] * Kit.word()}

      nil ->
        nil
    end
  end

  defp grow_loop(kept) do
    receive do
      {:call, from, ref, {:grow, n}} ->
        # Garbage (a list as long as what is kept) plus the kept cells.
        _garbage = Enum.map(1..n, &{&1})
        kept = Enum.reduce(1..n, kept, &[&1 | &2])
        send(from, {ref, :ok})
        grow_loop(kept)
    end
  end

  @impl true
  def render(r) do
    p = r.promotion
    last = List.last(r.growth)
    every = max(div(r.steps, 6), 1)
    shown = Enum.filter(r.growth, &(rem(div(&1.kept, r.per_step), every) == 0 or &1 == last))

    [
      "Part 1, promotion of one list (#{b(p.list_bytes)} of cons cells), heap space in use:\n",
      Table.render(
        ["step", "young heap used", "old heap used"],
        Enum.map(p.rows, &[&1.step, b(&1.young), b(&1.old)])
      ),
      "\nPart 2, a process growing a kept list (plus as much garbage), beside an idle process:\n",
      Table.render(
        [
          "kept cells",
          "young heap",
          "old heap",
          "minor GCs",
          "major GCs",
          "idle heap",
          "idle GCs"
        ],
        Enum.map(
          shown,
          &[&1.kept, b(&1.young), b(&1.old), &1.minor, &1.major, b(&1.idle_heap), &1.idle_gcs]
        )
      ),
      "\nThe grower ran #{last.minor} minor and #{last.major} major GCs; its heap grew to ",
      "#{b(last.young + last.old)}. The idle process's heap stayed at #{b(r.idle_after.heap)} ",
      "with #{r.idle_after.minor_gcs} GCs: each process is collected alone.\n",
      "Chart: #{r.chart}\n"
    ]
  end
end
