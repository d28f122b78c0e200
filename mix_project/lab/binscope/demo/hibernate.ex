defmodule Binscope.Demo.Hibernate do
  @moduledoc """
  Hibernation: a process runs a major GC and shrinks its heap to exactly its live data, then
  waits. Three identical GenServers do the same heavy request (it leaves a large heap behind): a
  plain one, one that returns `:hibernate` from every callback, and one started with
  `hibernate_after: 50`. The demo reports each heap after the request and after an idle pause,
  the wake-up cost (a call to a hibernated server vs a plain one), throughput on the same
  message stream, and what hibernating after every message costs per message as the backlog of
  waiting messages grows.

  The VM changed under this in OTP 28, and the demo reports what the running VM does:
  - up to OTP 27, gen_server hibernates with `erlang:hibernate/3` (through
    `proc_lib:hibernate/3`): the stack is discarded and the server waits in
    `erlang:hibernate/3`. With a message already waiting, hibernation returns at once, without
    a collection.
  - from OTP 28, gen_server calls `erlang:hibernate/0` (new in OTP 28: "unlike
    `erlang:hibernate/3`, it does not discard the call stack"). The server waits in its own
    loop (`gen_server:loop_hibernate/4`) with its stack; the heap still shrinks. It collects at
    every hibernation, even with messages waiting, and a collection copies the waiting messages
    of the default on-heap message queue into the heap: the cost per message grows with the
    backlog (an `off_heap` message queue keeps it flat, shown alongside).

  So "hibernated?" is not read from the current function (which names gen_server's own loop on
  OTP 28+). It is the documented effect of hibernation: a heap below the process's
  `min_heap_size` (hibernation shrinks the heap to the live data "even if that size is less
  than the minimum heap size"; no other collection does, and a fresh process starts at the
  minimum). Nor is it read from the status: a hibernated process handles a `process_info`
  request from another process itself and reads `:running` meanwhile (about 1% of reads while
  the demo's sampler scans it). Collections are counted with `:erlang.trace/3`
  (`:garbage_collection`).
  """
  @behaviour Binscope.Demo

  import Binscope.Demo.Kit, only: [b: 1]
  alias Binscope.Demo.Kit
  alias Binscope.Render.Table

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

  # Backlog runs: plain, hibernating after every message, and the same with an off-heap queue.
  @backlog_modes [
    plain: {:plain, []},
    hibernate: {:hibernate, []},
    hibernate_off_heap: {:hibernate, [spawn_opt: [message_queue_data: :off_heap]]}
  ]

  # Throughput is measured on bursts of at most this many casts, each drained by a call.
  @burst 1_000

  @impl true
  def name, do: :hibernate

  @impl true
  def title, do: "hibernation: heap back to its minimum, at a wake-up cost"

  @impl true
  def run(opts \\ []) do
    scale = Keyword.get(opts, :scale, 1.0)
    work = max(round(200_000 * scale), 5_000)
    pings = max(round(300 * scale), 30)
    stream = max(round(20_000 * scale), 1_000)
    burst = min(@burst, stream)
    backlogs = Enum.filter([1, 100, 1_000, 10_000], &(&1 <= stream))

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
    Kit.eventually(fn -> hibernating(servers).hibernate_after.hibernated? end)
    Kit.event(sampler, "idle 150 ms")
    after_idle = heaps(servers)
    waiting = hibernating(servers)
    hibernated? = Map.new(waiting, fn {mode, w} -> {mode, w.hibernated?} end)

    Kit.progress(opts, "wake-up cost: #{pings} calls to each server")
    call_us = Map.new(servers, fn {mode, pid} -> {mode, call_cost(pid, mode, pings)} end)
    Kit.event(sampler, "stream of #{stream} casts")

    Kit.progress(
      opts,
      "throughput: 5 rounds of #{stream} casts (bursts of #{burst} + 1 call) to each server"
    )

    # Five rounds, servers interleaved within each round; the median per server (a noisy machine).
    rounds =
      for _ <- 1..5,
          do: Map.new(servers, fn {mode, pid} -> {mode, throughput(pid, stream, burst)} end)

    rates = Map.new(servers, fn {mode, _} -> {mode, Kit.median(Enum.map(rounds, & &1[mode]))} end)
    Kit.event(sampler, "exit")
    for {_, pid} <- servers, do: GenServer.stop(pid)
    recording = Kit.stop(sampler)

    Kit.progress(opts, "cost per message by backlog: #{Enum.map_join(backlogs, ", ", &"#{&1}")}")
    backlog = for b <- backlogs, do: {b, Map.new(@backlog_modes, &{elem(&1, 0), backlog(&1, b)})}

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
      otp: List.to_string(:erlang.system_info(:otp_release)),
      work: work,
      stream: stream,
      burst: burst,
      after_work: after_work,
      after_idle: after_idle,
      hibernated?: hibernated?,
      waiting: waiting,
      backlog: backlog,
      call_us: call_us,
      rates: rates,
      fresh_heap: fresh_heap(),
      chart: chart,
      bars_chart: bars
    }
  end

  # Hibernated: a heap below the process's minimum (see the moduledoc). Also where
  # it waits and how many stack words it kept (1 after erlang:hibernate/3, which discards it).
  defp hibernating(servers) do
    Map.new(servers, fn {mode, pid} ->
      i =
        Map.new(
          Process.info(pid, [
            :status,
            :total_heap_size,
            :min_heap_size,
            :current_function,
            :stack_size
          ])
        )

      {mode,
       %{
         hibernated?: i.total_heap_size < i.min_heap_size,
         function: i.current_function,
         stack_words: i.stack_size
       }}
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

  # Casts per second: n casts (rounded down to whole bursts) in bursts of `burst`, each burst
  # drained by a call.
  defp throughput(pid, n, burst) do
    sent = div(n, burst) * burst
    t0 = System.monotonic_time()
    bursts(pid, sent, burst)
    us = max(Kit.us_since(t0), 1)
    round(sent * 1_000_000 / us)
  end

  defp bursts(pid, n, burst) do
    for _ <- 1..div(n, burst) do
      for _ <- 1..burst, do: GenServer.cast(pid, :msg)
      GenServer.call(pid, :ping, 600_000)
    end
  end

  # One fresh server per backlog: at least 2,000 casts (and one burst) in bursts of `backlog`,
  # timed untraced; then the same schedule again with its collections traced.
  defp backlog({_name, {mode, gen_opts}}, backlog) do
    n = max(backlog, 2_000)
    {:ok, pid} = GenServer.start(Server, mode, gen_opts)
    t0 = System.monotonic_time()
    bursts(pid, n, backlog)
    us = Kit.us_since(t0)
    counter = spawn(fn -> count_gcs(0) end)
    1 = :erlang.trace(pid, true, [:garbage_collection, {:tracer, counter}])
    bursts(pid, n, backlog)
    1 = :erlang.trace(pid, false, [:garbage_collection])
    # Every trace message sent so far has reached the counter before it is asked.
    delivered = :erlang.trace_delivered(pid)
    receive do: ({:trace_delivered, ^pid, ^delivered} -> :ok)
    GenServer.stop(pid)
    ref = make_ref()
    send(counter, {:count, self(), ref})
    gcs = receive do: ({^ref, k} -> k)
    # Messages handled: the casts and one call per burst.
    msgs = n + div(n, backlog)
    %{us_per_msg: us / msgs, gcs_per_msg: gcs / msgs}
  end

  defp count_gcs(n) do
    receive do
      {:trace, _, ev, _} when ev in [:gc_minor_start, :gc_major_start] -> count_gcs(n + 1)
      {:trace, _, _, _} -> count_gcs(n)
      {:count, from, ref} -> send(from, {ref, n})
    end
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
          waits_in(r.waiting[mode]),
          r.call_us[mode],
          r.rates[mode]
        ]
      end

    saved = r.after_idle.plain - r.after_idle.hibernate_after
    wake = r.call_us.hibernate - r.call_us.plain
    slow = r.rates.plain / max(r.rates.hibernate, 1)

    [
      "OTP #{r.otp}:\n",
      Table.render(
        [
          "server",
          "heap after heavy request",
          "heap after 150 ms idle",
          "hibernated?",
          "waits in (stack words)",
          "call µs (median)",
          "casts/s (bursts of #{r.burst}, median of 5)"
        ],
        rows
      ),
      "\nIdle, a hibernated server holds #{b(r.after_idle.hibernate_after)} against ",
      "#{b(r.after_idle.plain)} for the plain one (a fresh server: #{b(r.fresh_heap)}): ",
      "#{b(saved)} saved per idle process.\n",
      how(r),
      "It costs: a call that wakes a hibernated server took #{r.call_us.hibernate} µs against ",
      "#{r.call_us.plain} µs (+#{wake} µs; the hibernate_after figure, #{r.call_us.hibernate_after} µs, ",
      "also includes waking the node from a 60 ms pause), and hibernating after every message cut throughput ",
      "#{:erlang.float_to_binary(slow, decimals: 1)}x on bursts of #{r.burst} casts. ",
      after_text(r),
      " and still shrank when idle: it pays for processes that are mostly idle after heavy work, ",
      "and costs for busy ones.\n\n",
      "Hibernating after every message, by backlog (casts sent in bursts of that size, each burst ",
      "drained by a call; collections of the server traced):\n",
      backlog_table(r.backlog),
      backlog_text(r),
      "Charts: #{r.chart}, #{r.bars_chart}\n"
    ]
  end

  # hibernate_after only fires after 50 ms of silence, so a stream should not slow it; the text
  # says what was measured (within 20% of plain counts as noise on a shared machine).
  defp after_text(r) do
    ratio = r.rates.hibernate_after / max(r.rates.plain, 1)
    figures = "#{r.rates.hibernate_after} vs #{r.rates.plain} casts/s for plain"

    if ratio >= 0.8,
      do: "hibernate_after did not slow the stream (#{figures}; gaps of this size are noise)",
      else:
        "hibernate_after ran the stream at #{:erlang.float_to_binary(ratio, decimals: 2)}x " <>
          "plain's rate (#{figures})"
  end

  defp waits_in(%{function: {m, f, a}, stack_words: s}), do: "#{inspect(m)}.#{f}/#{a} (#{s})"

  # How the running VM hibernated, from what was measured (not from the OTP version number).
  defp how(r) do
    w = r.waiting.hibernate

    if w.function == {:erlang, :hibernate, 3} do
      "On OTP #{r.otp} gen_server hibernates with erlang:hibernate/3: the stack is discarded " <>
        "(#{w.stack_words} word left) and the server waits in erlang:hibernate/3.\n"
    else
      "On OTP #{r.otp} gen_server hibernates with erlang:hibernate/0 (OTP 28+): the server waits " <>
        "in #{inspect(elem(w.function, 0))}.#{elem(w.function, 1)}/#{elem(w.function, 2)} with " <>
        "its stack kept (#{w.stack_words} words), and its heap still shrank to its live data.\n"
    end
  end

  defp backlog_table(backlog) do
    cols = Keyword.keys(@backlog_modes)

    rows =
      for {b, by_mode} <- backlog do
        [b | Enum.flat_map(cols, &[us(by_mode[&1].us_per_msg), gcs(by_mode[&1].gcs_per_msg)])]
      end

    headers = ["backlog" | Enum.flat_map(cols, &["#{&1} µs/msg", "#{&1} GCs/msg"])]

    Table.render(headers, rows)
  end

  defp backlog_text(r) do
    [{b_min, first} | _] = Enum.filter(r.backlog, fn {b, _} -> b > 1 end)
    {b_max, last} = List.last(r.backlog)
    h0 = first.hibernate
    h1 = last.hibernate

    if h1.gcs_per_msg >= 0.5 do
      "On OTP #{r.otp} hibernation collects at every message even when messages wait " <>
        "(#{gcs(h1.gcs_per_msg)} GCs per message at a backlog of #{b_max}), and each collection " <>
        "copies the waiting messages into the heap: the cost per message grew from " <>
        "#{us(h0.us_per_msg)} µs at a backlog of #{b_min} to #{us(h1.us_per_msg)} µs at " <>
        "#{b_max} (a burst of N messages costs O(N²)). With an off-heap message queue it stayed " <>
        "at #{us(last.hibernate_off_heap.us_per_msg)} µs (#{gcs(last.hibernate_off_heap.gcs_per_msg)} " <>
        "GCs per message).\n"
    else
      "On OTP #{r.otp} hibernation is skipped while a message waits: " <>
        "#{gcs(h1.gcs_per_msg)} GCs per message at a backlog of #{b_max} " <>
        "(#{gcs(last.plain.gcs_per_msg)} for plain), " <>
        "#{us(h1.us_per_msg)} µs per message against #{us(last.plain.us_per_msg)} µs; " <>
        "with one message at a time (backlog 1) it collects once per call.\n"
    end
  end

  defp us(x), do: :erlang.float_to_binary(x / 1, decimals: 2)
  defp gcs(x), do: :erlang.float_to_binary(x / 1, decimals: 2)
end
