defmodule Binscope.LeaksWasteTest do
  use Binscope.StoreCase, async: false

  alias Binscope.LeakScenario, as: S

  @kb 1_000

  setup do
    for p <- Process.list(), do: :erlang.garbage_collect(p)
    :ok
  end

  # A router that keeps a 100-byte header of each client's last 100 KB packet: the headers are
  # sub-binaries, each pinning its whole packet.
  defp router(clients, busy? \\ false) do
    parent = self()

    pid =
      spawn(fn ->
        headers =
          for c <- 1..clients, into: %{} do
            packet = :binary.copy(<<rem(c, 256)>>, 100 * @kb)
            {c, binary_part(packet, 0, 100)}
          end

        send(parent, {:routing, self()})
        route(headers, busy?)
      end)

    receive do
      {:routing, ^pid} -> pid
    after
      5_000 -> raise "router did not start"
    end
  end

  # Busy: wakes every millisecond and allocates a little, as routing does, so minor GCs run
  # and move the headers (and the packets they pin) to its old heap.
  defp route(headers, busy?) do
    receive do
      :stop -> map_size(headers)
    after
      if(busy?, do: 1, else: :infinity) ->
        _ = :erlang.list_to_tuple(Enum.to_list(1..200))
        route(headers, busy?)
    end
  end

  defp major_gcs(pid) do
    receive do
      {:trace, ^pid, :gc_major_start, _} -> 1 + major_gcs(pid)
    after
      0 -> 0
    end
  end

  test "slices pinning large parents rank first with :binary_copy, even after a collection" do
    router = router(100)
    # Already collected: a GC frees nothing more of it.
    :erlang.garbage_collect(router)
    # Processes that free real garbage at their collection (less than the router pins).
    leakers = for _ <- 1..3, do: elem(S.burst_then_idle(4, 256 * 1024), 0)

    for opts <- [[], [mode: :full]] do
      {:ok, [first | rest]} = Binscope.leaks([limit: 5] ++ opts)
      assert first.pid == router, inspect([first | rest], pretty: true)
      assert first.suggestion == :binary_copy
      assert first.reclaimed_bytes == 0
      assert first.pinned_bytes >= 100 * 100 * @kb - 64 * 1024
      assert first.waste_bytes == first.pinned_bytes
      # The leakers follow, ranked by what their GC freed.
      assert Enum.all?(rest, &(&1.waste_bytes <= first.waste_bytes))
    end

    S.stop_all([router | leakers])
  end

  # Up to OTP 26 the minor GCs of a busy router move its headers (and the packets they pin) to
  # the old heap, where the ranking sees them as likely garbage. On OTP 29 they stay on the
  # young binary heap (bin_old_vheap_size 0 after 300 ms of minor GCs, measured), so targeted
  # mode does not shortlist a busy slice keeper there: a known limit, not tested as a pass.
  if String.to_integer(to_string(:erlang.system_info(:otp_release))) < 27 do
    test "a busy router whose slices survived a collection is collected and ranked by what it pins" do
      router = router(100, true)
      :erlang.garbage_collect(router)
      Process.sleep(200)
      {:garbage_collection_info, gci} = Process.info(router, :garbage_collection_info)
      assert gci[:bin_old_vheap_size] * :erlang.system_info(:wordsize) >= 100 * 100 * @kb
      leakers = for _ <- 1..3, do: elem(S.burst_then_idle(4, 256 * 1024), 0)
      {:ok, [first | _]} = Binscope.leaks(limit: 5)
      assert first.pid == router and first.suggestion == :binary_copy
      assert first.pinned_bytes >= 100 * 100 * @kb - 64 * 1024
      S.stop_all([router | leakers])
    end
  end

  test "targeted mode never forces a GC on a process with nothing to gain" do
    # A large heap, no binaries: nothing a GC would give back in binaries.
    parent = self()

    heap =
      spawn(fn ->
        l = Enum.to_list(1..200_000)
        send(parent, :built)

        receive do
          :stop -> length(l)
        end
      end)

    assert_receive :built
    {leaker, _} = S.burst_then_idle(2, 1_048_576)
    :erlang.trace(heap, true, [:garbage_collection])
    {:ok, found} = Binscope.leaks(limit: 5, candidates: 20)
    :erlang.trace(heap, false, [:garbage_collection])
    assert Enum.any?(found, &(&1.pid == leaker))
    refute Enum.any?(found, &(&1.pid == heap))
    assert major_gcs(heap) == 0
    S.stop_all([heap, leaker])
  end

  test "Binscope's own processes stay out; OTP's get no advice; a passive receiver no hibernation" do
    {:ok, l} = :gen_tcp.listen(0, active: false, reuseaddr: true)
    {:ok, port} = :inet.port(l)
    parent = self()

    receiver =
      spawn(fn ->
        {:ok, s} = :gen_tcp.connect(~c"127.0.0.1", port, active: false)
        garbage = for i <- 1..3, do: :binary.copy(<<i>>, 1_048_576)
        send(parent, {:connected, length(garbage)})
        :gen_tcp.recv(s, 0)
      end)

    assert_receive {:connected, 3}
    {:ok, _server_side} = :gen_tcp.accept(l)
    Process.sleep(50)
    assert {:current_function, {:prim_inet, _, _}} = Process.info(receiver, :current_function)
    # One of Binscope's own long-lived processes.
    prefix =
      Path.join(System.tmp_dir!(), "binscope_waste_rec_#{System.unique_integer([:positive])}")

    {:ok, recorder} = Binscope.Memory.Recorder.start(prefix, interval: 60_000)
    Process.sleep(50)

    {:ok, found} = Binscope.leaks(mode: :full, limit: 10_000)
    {:ok, targeted} = Binscope.leaks(limit: 10_000, candidates: 1_000)
    refute Enum.any?(found ++ targeted, &(&1.pid == recorder))
    {:ok, _} = Binscope.Memory.Recorder.stop(recorder)
    for f <- Path.wildcard(prefix <> "*"), do: File.rm(f)

    own =
      for r <- found,
          {m, _, _} <- [r.initial_call, r.current_function],
          m in (:binscope_collector.modules() ++
                  [Binscope.Remote, Binscope.Leaks, Binscope.Memory.Recorder]),
          do: r

    assert own == []

    code = Enum.find(found, &(&1.registered_name == :code_server))
    assert code.suggestion == :none and code.reason =~ "OTP's own"

    r = Enum.find(found, &(&1.pid == receiver))
    assert r.reclaimed_bytes >= 3 * 1_048_576
    assert r.suggestion == :none and r.reason =~ "passive receive"
    Process.exit(receiver, :kill)
    :gen_tcp.close(l)
  end

  test "an off-heap message queue is flagged: its binaries are not in process_info" do
    pid =
      :erlang.spawn_opt(
        fn ->
          receive do
            :stop -> :ok
          end
        end,
        [{:message_queue_data, :off_heap}]
      )

    for i <- 1..3, do: send(pid, {:packet, :binary.copy(<<i>>, 1_048_576)})
    {:ok, found} = Binscope.leaks(mode: :full, limit: 10_000)
    r = Enum.find(found, &(&1.pid == pid))
    assert r.off_heap_queue == true
    assert r.suggestion == :off_heap_queue
    assert r.reason =~ "not in process_info"
    Process.exit(pid, :kill)
  end

  # The results' waste (leaks_suggest/1, what a full scan's ranking, leaks_full_rank/4, also
  # ranks by) is the bytes the GC freed plus the bytes small slices pin, pinned slices included.
  test "a result's waste is what its GC freed plus what its slices pin (leaks_suggest)" do
    facts =
      for reclaimed <- [0, 5_000_000], pss <- [0, 2_000_000, 40_000_000], heap <- [0, 10_000] do
        %{
          reclaimed_bytes: reclaimed,
          retained_binary_bytes: pss,
          retained_binaries: 3,
          heap_bytes: heap,
          message_queue_len: 0,
          reductions_delta: 0,
          otp_behaviour: true,
          fullsweep_after: 0,
          minor_gcs: 0,
          system_process: false,
          passive_recv: false,
          off_heap_queue: false
        }
      end

    advice = Binscope.Native.leaks_suggest(facts)

    for {f, {_, _, pinned, waste}} <- Enum.zip(facts, advice),
        do: assert(waste == f.reclaimed_bytes + pinned, inspect({f, pinned, waste}))

    # Pinned bytes count: some process wastes more than its GC freed.
    assert Enum.any?(advice, fn {_, _, pinned, _} -> pinned > 0 end)

    suggestions = [:hibernate_after, :hibernate_idle, :fullsweep_after, :binary_copy]
    suggestions = suggestions ++ [:off_heap_queue, :none]
    assert Enum.all?(advice, fn {s, reason, _, _} -> s in suggestions and is_binary(reason) end)
  end
end
