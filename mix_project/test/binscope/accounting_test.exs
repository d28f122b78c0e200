defmodule Binscope.AccountingTest do
  # Store counters are node-global and the leak finder forces GCs: run alone.
  use Binscope.StoreCase, async: false

  alias Binscope.LeakScenario, as: S

  doctest Binscope

  @mib 1_048_576

  test "memory/0 reports every :erlang.memory category, RSS, the store and what is unaccounted" do
    {:ok, m} = Binscope.memory()

    for {k, v} <- :erlang.memory(), do: assert(is_integer(m[k]) and m[k] > 0, "#{k}: #{v}")
    assert m.node == node()
    assert m.binscope_loaded
    assert is_integer(m.rss) and m.rss > m.total
    assert m.rss == m.rss_file + m.rss_shmem + m.native_resident + m.vm_resident + m.unaccounted
    assert m.vm_blocks <= m.vm_carriers and m.vm_carriers <= m.vm_mapped

    h = holder()
    for _ <- 1..4, do: send(h, {:keep, Store.alloc!(@mib)})
    sync(h)
    {:ok, m2} = Binscope.memory()
    assert m2.store_live_bytes - m.store_live_bytes == 4 * @mib
    assert m2.native_allocated >= 4 * @mib
    stop(h)
  end

  test "a record per process with identity, sizes and GC facts" do
    {:ok, gs} = Agent.start(fn -> :ok end)
    Process.register(gs, :binscope_accounting_test_agent)
    {:ok, [r]} = Binscope.processes(pids: [gs])

    assert r.pid == gs
    assert r.registered_name == :binscope_accounting_test_agent
    # proc_lib's real initial call (here the Agent's function), not proc_lib:init_p/5.
    assert r.initial_call == :proc_lib.translate_initial_call(gs)
    refute r.initial_call == {:proc_lib, :init_p, 5}
    assert {:gen_server, :loop, _} = r.current_function
    w = :erlang.system_info(:wordsize)
    {:total_heap_size, th} = Process.info(gs, :total_heap_size)
    assert r.total_heap_size == th * w
    assert r.fullsweep_after == 65535 and r.minor_gcs >= 0

    # Every metric is a number, except where it cannot be known: other NIFs' native bytes are
    # invisible to the virtual binary heap from OTP 27 on, so native_bytes is nil there.
    unknown =
      if String.to_integer(List.to_string(:erlang.system_info(:otp_release))) >= 27,
        do: [:native_bytes],
        else: []

    for k <- Binscope.Accounting.Options.metrics() -- unknown,
        do: assert(is_integer(r[k]), "#{k}")

    for k <- unknown, do: assert(r[k] == nil and r.native_estimated_bytes == nil, "#{k}")
    Agent.stop(gs)
  end

  test "many processes sharing one large binary: PSS sums to its size, USS is 0" do
    big = :binary.copy(<<7>>, 3 * @mib + 1)
    pids = S.sharers(big, 7)
    {:ok, snap} = Binscope.snapshot(pids: pids)

    assert Enum.sum(Enum.map(snap.processes, & &1.binary_pss)) == byte_size(big)
    assert Enum.all?(snap.processes, &(&1.binary_uss == 0))
    # What other tools show: 7 times the binary.
    assert snap.summary.naive_bytes == 7 * byte_size(big)
    assert snap.summary.unique_bytes == byte_size(big)
    assert [%{size: size, holders: 7}] = snap.top_shared
    assert size == byte_size(big)
    # This test process holds it too, outside the scanned set.
    assert snap.summary.external_binaries == 1
    S.stop_all(pids)
  end

  test "a binary held by one process only is its USS; PSS over the whole node counts each once" do
    {pid, _} = S.slice_keeper(1, 2 * @mib, 10)
    {:ok, [r]} = Binscope.processes(pids: [pid])
    assert r.binary_uss == 2 * @mib
    assert r.binary_pss == 2 * @mib

    {:ok, snap} = Binscope.snapshot()
    assert Enum.sum(Enum.map(snap.processes, & &1.binary_pss)) == snap.summary.unique_bytes
    assert snap.summary.naive_bytes >= snap.summary.unique_bytes
    S.stop_all([pid])
  end

  test "store binaries held by a dead owner's heirs are attributed to the heirs, at real size" do
    heirs = for _ <- 1..3, do: holder()
    test = self()

    {owner, ref} =
      spawn_monitor(fn ->
        a = Store.put!(:binary.copy(<<1>>, 3 * @mib))
        b = Store.alloc!(@mib + 5)
        for h <- heirs, do: send(h, {:keep, a})
        send(hd(heirs), {:keep, b})
        send(test, :sent)
      end)

    assert_receive :sent
    assert_receive {:DOWN, ^ref, :process, ^owner, :normal}
    Enum.each(heirs, &sync/1)

    {:ok, snap} = Binscope.snapshot(pids: heirs)
    [first | rest] = snap.processes
    # `a` (3 MiB) shared by three heirs, `b` held by the first only.
    assert first.native_store_bytes == 3 * @mib + @mib + 5
    assert Enum.all?(rest, &(&1.native_store_bytes == 3 * @mib))
    assert first.binary_uss == @mib + 5
    assert Enum.sum(Enum.map(snap.processes, & &1.binary_pss)) == 4 * @mib + 5
    # binary_bytes is what process_info(:binary) lists: each store binary at its small resource
    # size where the VM charges it natively (OTP 25), at its real size where Binscope's GC
    # pressure patch writes it there (OTP 27+).
    case Store.GcPressure.status().mode do
      :patched -> assert first.binary_bytes == 3 * @mib + @mib + 5
      _ -> assert first.binary_bytes < 1024
    end

    assert snap.summary.store_bytes == 3 * 3 * @mib + @mib + 5

    {:ok, by_owner} = {:ok, Store.by_owner()}
    assert %{alive?: false, bytes: bytes} = by_owner[owner]
    assert bytes == 4 * @mib + 5
    Enum.each(heirs, &stop/1)
  end

  test "top/2 orders by any metric and processes that exit mid-scan are skipped" do
    pids = for n <- 1..5, do: elem(S.slice_keeper(1, n * 100_000, 10), 0)
    {:ok, top} = Binscope.top(3, by: :binary_uss)
    sizes = Enum.map(top, & &1.binary_uss)
    assert sizes == Enum.sort(sizes, :desc)
    # top/2 ranks the whole node, where another test's long-lived process may hold more than
    # these: the keepers' order is checked within a wider ranking.
    {:ok, wide} = Binscope.top(100, by: :binary_uss)
    ours = for %{pid: pid} <- wide, pid in pids, do: pid
    assert Enum.take(ours, 2) == [Enum.at(pids, 4), Enum.at(pids, 3)]

    dead = spawn(fn -> :ok end)
    ref = Process.monitor(dead)
    assert_receive {:DOWN, ^ref, _, _, _}
    {:ok, recs} = Binscope.processes(pids: [dead | pids])
    assert length(recs) == 5
    S.stop_all(pids)
  end

  test "top/2 leaves out the scan's own process (it ran the collector while it was read), with or without window:" do
    scan = :binscope_collector.modules()

    for opts <- [[], [window: 20]] do
      {:ok, all} = Binscope.top(1_000_000, opts)
      assert length(all) > 10
      own = for %{current_function: {m, _, _}} = r <- all, m in scan, do: r
      assert own == [], "#{inspect(opts)}: #{inspect(own, limit: 4)}"
      # The caller is an ordinary process and stays (it waits in Binscope.Scanner.run/1).
      assert Enum.any?(all, &(&1.pid == self())), inspect(opts)
    end
  end

  test "detail: :basic records hold what basic detail collects and nothing else" do
    big = :binary.copy(<<7>>, 2 * @mib)
    pids = S.sharers(big, 4)
    {:ok, basic} = Binscope.processes(pids: pids, detail: :basic)
    {:ok, full} = Binscope.processes(pids: pids)
    fields = Enum.sort(Binscope.Accounting.basic_fields())

    for {b, f} <- Enum.zip(basic, full) do
      # Every field of a basic record, with the full record's value (a scan of the same idle
      # processes a moment later; memory aside, which nothing here should change but which is
      # not this test's point).
      assert Enum.sort(Map.keys(b)) == fields
      assert Map.delete(b, :memory) == f |> Map.take(fields) |> Map.delete(:memory)
      assert is_integer(b.memory) and b.memory > 0
      # The full record has every other field, collected.
      assert is_tuple(f.current_function) and is_integer(f.minor_gcs)
      assert is_integer(f.message_queue_len) and is_integer(f.heap_size)
      assert Map.has_key?(f, :native_bytes) and Map.has_key?(f, :native_estimated_bytes)
    end

    # 13 fields: 16 words a record, 18 with its list cell (these processes have no name or
    # label; the key tuple is one that every record shares, counted once in a list's size). A
    # map of every field (27) took 32.
    assert :erts_debug.size(basic) - :erts_debug.size(tl(basic)) == 18

    assert {:ok, [_]} = Binscope.top(1, by: :binary_pss, detail: :basic)

    assert_raise ArgumentError, ~r/with detail: :basic, :by must be one of/, fn ->
      Binscope.top(1, by: :minor_gcs, detail: :basic)
    end

    S.stop_all(pids)
  end

  test "bad options raise ArgumentError naming the option" do
    for {fun, bad} <- [
          {fn -> Binscope.processes(foo: 1) end, ~r/unknown option/},
          {fn -> Binscope.processes(pids: [1]) end, ~r/:pids must be a list of pids/},
          {fn -> Binscope.top(0) end, ~r/positive integer/},
          {fn -> Binscope.top(3, by: :nonsense) end, ~r/:by must be one of/},
          {fn -> Binscope.top(3, by: "memory") end, ~r/:by must be one of/},
          {fn -> Binscope.leaks(mode: :everything) end, ~r/:mode must be/},
          {fn -> Binscope.leaks(limit: -1) end, ~r/:limit must be/},
          {fn -> Binscope.leaks(candidates: 1.5) end, ~r/:candidates must be/},
          {fn -> Binscope.memory(node: "n@h") end, ~r/:node must be/},
          {fn -> Binscope.memory(nodes: []) end, ~r/:nodes must be/},
          {fn -> Binscope.memory(node: :a@b, nodes: [:a@b]) end, ~r/either :node or :nodes/},
          {fn -> Binscope.memory(timeout: 0) end, ~r/:timeout must be/},
          {fn -> Binscope.processes(detail: :some) end, ~r/:detail must be :full or :basic/},
          {fn -> Binscope.memory(detail: :basic) end, ~r/unknown option/},
          {fn -> Binscope.memory(:not_a_list) end, ~r/keyword list/}
        ] do
      assert_raise ArgumentError, bad, fun
    end
  end

  test "a remote target while this node is not distributed is an error, not a crash" do
    if Node.alive?() do
      assert {:error, :noconnection} = Binscope.memory(node: :nobody@nowhere, timeout: 2_000)
    else
      assert {:error, :not_distributed} = Binscope.memory(node: :nobody@nowhere)
      assert_raise Binscope.Error, ~r/not_distributed/, fn -> Binscope.memory!(node: :x@y) end
    end
  end

  test "every call that returns {:ok, _} | {:error, _} has a bang variant that unwraps it" do
    bangless = [:print]

    for {fun, arity} <- Binscope.__info__(:functions),
        not String.ends_with?(Atom.to_string(fun), "!"),
        fun not in bangless do
      assert function_exported?(Binscope, :"#{fun}!", arity), "#{fun}/#{arity} has no bang"
    end

    pid = spawn(fn -> receive(do: (:stop -> :ok)) end)
    assert %{processes: [%{pid: ^pid}]} = Binscope.snapshot!(pids: [pid], detail: :basic)
    assert %{} = Binscope.binaries_elsewhere!(read_tables: false)
    send(pid, :stop)

    unless Node.alive?() do
      assert_raise Binscope.Error, ~r/not_distributed/, fn -> Binscope.snapshot!(node: :x@y) end
    end
  end

  test "the store address calibration checks itself and refuses on a mismatch" do
    _ = Store.stats()
    assert {:ok, {offset, size}} = :binscope_collector.calibration_status()
    assert offset > 0 and size > 0
    {:ok, snap} = Binscope.snapshot(detail: :basic)
    assert snap.store_resolution == :ok

    # Two probes at the same distance from their listed binaries, listed at the same size: ok.
    assert {:ok, {50, 72}} ==
             :binscope_collector.check_calibration([{100, 72, 1}, {400, 72, 1}], [150, 450])

    # The second probe allocated right after the first: the first's header is within reach of
    # the second object too, but the nearest header is its own (seen as a flaky refusal).
    assert {:ok, {50, 72}} ==
             :binscope_collector.check_calibration([{100, 72, 1}, {200, 72, 1}], [150, 250])

    # Two probes allocated next to each other: the second object also lies within 256 bytes of
    # the first binary (seen: [[{72, 56}], [{168, 56}, {72, 56}]]); the nearer one is its own.
    assert {:ok, {72, 56}} ==
             :binscope_collector.check_calibration([{100, 56, 1}, {196, 56, 1}], [172, 268])

    # Different distances, different sizes, no header in reach: refused, never guessed.
    for {listed, objects} <- [
          {[{100, 72, 1}, {400, 72, 1}], [150, 460]},
          {[{100, 72, 1}, {400, 80, 1}], [150, 450]},
          {[{100, 72, 1}, {400, 72, 1}], [150, 800]},
          {[{100, 72, 1}], [150, 450]}
        ] do
      assert {:error, {:calibration_mismatch, _, _}} =
               :binscope_collector.check_calibration(listed, objects)
    end
  end
end
