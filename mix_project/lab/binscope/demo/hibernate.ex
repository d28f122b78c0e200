defmodule Binscope.Demo.Hibernate do
  @moduledoc """
  Hibernation: a process discards its stack, runs a major GC and shrinks its heap to exactly its
  live data, then waits. Three identical GenServers do the same heavy request (it leaves a large
  heap behind): a plain one, one that returns `:hibernate` from every callback, and one started
  with `hibernate_after: 50`. The demo reports each heap after the request and after an idle
  pause, the wake-up cost (a call to a hibernated server vs a plain one), and throughput on
  the same message stream.
  """
  @behaviour Binscope.Demo

  import Binscope.Demo.Kit, only: [b: 1]
  alias Binscope.Demo.Kit
  alias Binscope.Report.Table

  defmodule Server do
    @moduledoc false
    use GenServer

    def init(mode), do: {:ok, %{mode: mode, n: 0}}

    def handle_call(:work, _from, s) do
      # A heavy request: builds (and drops) a large term; the heap grew to hold it.
      work = Enum.map(1..s.size_hint, &{&1, &1}) |> length()
      reply(work, s)
    end

    def handle_call(:ping, _from, s), do: reply(s.n, s)

    def handle_cast(:msg, s), do: noreply(%{s | n: s.n + 1})

    defp reply(r, %{mode: :hibernate} = s), do: {:reply, r, s, :hibernate}
    defp reply(r, s), do: {:reply, r, s}
    defp noreply(%{mode: :hibernate} = s), do: {:noreply, s, :hibernate}
    defp noreply(s), do: {:noreply, s}
  end

  @modes [plain: [], hibernate: [], hibernate_after: [hibernate_after: 50]]

  @impl true
  def name, do: :hibernate

  @impl true
  def title, do: "hibernation: heap back to its minimum, at a wake-up cost"

  @impl true
  def run(opts \\ []) do
    scale = Keyword.get(opts, :scale, 1.0)
    work = max(round(200_000 * scale), 5_000)
    pings = max(round(300 * scale), 30)
    stream = max(round(50_000 * scale), 1_000)

    servers =
      for {mode, gen_opts} <- @modes do
        {:ok, pid} = GenServer.start(Server, mode, gen_opts)
        :sys.replace_state(pid, &Map.put(&1, :size_hint, work))
        {mode, pid}
      end

    sampler =
      Kit.sampler(fn ->
        Map.new(servers, fn {mode, pid} -> {mode, (Kit.proc(pid) || %{})[:heap]} end)
      end)

    Kit.event(sampler, "heavy request")
    for {_, pid} <- servers, do: GenServer.call(pid, :work, 60_000)
    after_work = heaps(servers)
    Process.sleep(150)
    # hibernate_after: 50 has fired by now; on a loaded machine give it up to 2 s more.
    Kit.eventually(fn -> hibernating(servers).hibernate_after end)
    Kit.event(sampler, "idle 150 ms")
    after_idle = heaps(servers)
    hibernated? = hibernating(servers)

    Kit.progress(opts, "wake-up cost: #{pings} calls to each server")
    call_us = Map.new(servers, fn {mode, pid} -> {mode, call_cost(pid, mode, pings)} end)
    Kit.event(sampler, "stream of #{stream} casts")
    Kit.progress(opts, "throughput: 5 rounds of #{stream} casts + 1 call to each server")
    # Five rounds, servers interleaved within each round; the median per server (a noisy machine).
    rounds =
      for _ <- 1..5, do: Map.new(servers, fn {mode, pid} -> {mode, throughput(pid, stream)} end)

    rates = Map.new(servers, fn {mode, _} -> {mode, Kit.median(Enum.map(rounds, & &1[mode]))} end)
    Kit.event(sampler, "exit")
    for {_, pid} <- servers, do: GenServer.stop(pid)
    recording = Kit.stop(sampler)

    chart =
      Kit.chart(
        opts,
        "hibernate.svg",
        "Hibernation: total heap of three identical servers",
        recording,
        [plain: "plain", hibernate: "returns :hibernate", hibernate_after: "hibernate_after: 50"],
        unit: {1024, "KiB"}
      )

    bars = Kit.report_path(opts, "hibernate_throughput.svg")

    Binscope.Chart.bars!(bars, %{
      title: "Throughput on the same stream of casts",
      y_label: "messages / s",
      bars: for({mode, _} <- @modes, do: {Atom.to_string(mode), rates[mode]})
    })

    Kit.progress(opts, ["charts: ", chart, ", ", bars])

    %{
      work: work,
      stream: stream,
      after_work: after_work,
      after_idle: after_idle,
      hibernated?: hibernated?,
      call_us: call_us,
      rates: rates,
      fresh_heap: fresh_heap(),
      chart: chart,
      bars_chart: bars
    }
  end

  defp hibernating(servers) do
    Map.new(servers, fn {mode, pid} ->
      {mode,
       Process.info(pid, :current_function) == {:current_function, {:erlang, :hibernate, 3}}}
    end)
  end

  defp heaps(servers), do: Map.new(servers, fn {mode, pid} -> {mode, Kit.proc(pid).heap} end)

  # Median µs of a :ping call. For hibernate_after the server is left idle 60 ms first, so every
  # call wakes it (fewer rounds, as each costs the pause).
  defp call_cost(pid, mode, n) do
    n = if mode == :hibernate_after, do: max(div(n, 10), 5), else: n

    for _ <- 1..n do
      if mode == :hibernate_after, do: Process.sleep(60)
      {us, _} = :timer.tc(fn -> GenServer.call(pid, :ping) end)
      us
    end
    |> Kit.median()
  end

  defp throughput(pid, n) do
    t0 = System.monotonic_time()
    for _ <- 1..n, do: GenServer.cast(pid, :msg)
    GenServer.call(pid, :ping, 60_000)
    us = max(Kit.us_since(t0), 1)
    round(n * 1_000_000 / us)
  end

  defp fresh_heap do
    {:ok, pid} = GenServer.start(Server, :plain)
    heap = Kit.proc(pid).heap
    GenServer.stop(pid)
    heap
  end

  @impl true
  def render(r) do
    rows =
      for {mode, _} <- @modes do
        [
          Atom.to_string(mode),
          b(r.after_work[mode]),
          b(r.after_idle[mode]),
          to_string(r.hibernated?[mode]),
          r.call_us[mode],
          r.rates[mode]
        ]
      end

    saved = r.after_idle.plain - r.after_idle.hibernate_after
    wake = r.call_us.hibernate - r.call_us.plain
    slow = r.rates.plain / max(r.rates.hibernate, 1)

    [
      Table.render(
        [
          "server",
          "heap after heavy request",
          "heap after 150 ms idle",
          "hibernated?",
          "call µs (median)",
          "casts/s (median of 5)"
        ],
        rows
      ),
      "\nIdle, a hibernated server holds #{b(r.after_idle.hibernate_after)} against ",
      "#{b(r.after_idle.plain)} for the plain one (a fresh server: #{b(r.fresh_heap)}): ",
      "#{b(saved)} saved per idle process.\n",
      "It costs: a call that wakes a hibernated server took #{r.call_us.hibernate} µs against ",
      "#{r.call_us.plain} µs (+#{wake} µs; the hibernate_after figure, #{r.call_us.hibernate_after} µs, ",
      "also includes waking the node from a 60 ms pause), and hibernating after every message cut throughput ",
      "#{:erlang.float_to_binary(slow, decimals: 1)}x. hibernate_after did not slow a steady stream ",
      "(#{r.rates.hibernate_after} vs #{r.rates.plain} casts/s for plain; gaps of this size are noise on ",
      "a shared machine) and still shrank ",
      "when idle: it pays for processes that are mostly idle after heavy work, and costs for busy ones.\n",
      "Charts: #{r.chart}, #{r.bars_chart}\n"
    ]
  end
end
