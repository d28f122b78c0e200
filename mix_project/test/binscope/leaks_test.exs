defmodule Binscope.LeaksTest do
  use Binscope.StoreCase, async: false

  alias Binscope.LeakScenario, as: S

  @mib 1_048_576

  setup do
    # Start from a collected node, so earlier tests' garbage does not compete with the leakers.
    for p <- Process.list(), do: :erlang.garbage_collect(p)
    :ok
  end

  defp vm_binary_bytes(pid) do
    {:binary, bins} = Process.info(pid, :binary)
    bins |> Enum.uniq_by(&elem(&1, 0)) |> Enum.map(&elem(&1, 1)) |> Enum.sum()
  end

  test "targeted mode finds burst-then-idle leakers among idle processes, with exact bytes" do
    idle = S.idle_processes(2_000)
    leakers = for n <- 1..3, do: S.burst_then_idle(4, n * @mib)
    before = Map.new(leakers, fn {pid, _} -> {pid, vm_binary_bytes(pid)} end)

    {:ok, found} = Binscope.leaks(limit: 3, candidates: 10)

    assert Enum.map(found, & &1.pid) == Enum.map(Enum.reverse(leakers), &elem(&1, 0))

    for {pid, dropped} <- leakers do
      r = Enum.find(found, &(&1.pid == pid))
      assert r.reclaimed_bytes == dropped
      assert r.reclaimed_refs == 4
      assert r.suggestion == :hibernate_idle
      assert r.reason =~ "idle"
      # The GC really happened: the process no longer holds them.
      assert vm_binary_bytes(pid) <= before[pid] - dropped
    end

    S.stop_all(idle ++ Enum.map(leakers, &elem(&1, 0)))
  end

  test "targeted: an idle leaker outranks a running process holding more, live, binaries" do
    busy = S.busy_holder(8 * @mib)
    {leaker, dropped} = S.burst_then_idle(3, @mib)

    # Ranked by bytes only it references, the running process would come first (8 MiB against
    # 3): with one candidate, its GC would free nothing. It is running and its binaries are
    # young, so none of them are likely garbage only a forced GC frees.
    {:ok, [r]} = Binscope.leaks(limit: 1, candidates: 1)
    assert r.pid == leaker
    assert r.reclaimed_bytes == dropped
    assert r.likely_garbage_bytes == dropped

    {:ok, dry} = Binscope.leaks(mode: :dry_run, limit: 50)
    b = Enum.find(dry, &(&1.pid == busy))
    assert b.estimated_bytes >= 8 * @mib
    assert b.likely_garbage_bytes == 0
    assert Enum.max_by(dry, & &1.estimated_bytes).pid == busy
    assert vm_binary_bytes(busy) >= 8 * @mib
    S.stop_all([busy, leaker])
  end

  test "full mode finds the same leakers; dry run collects nothing" do
    idle = S.idle_processes(300)
    leakers = for n <- 1..2, do: S.burst_then_idle(3, n * @mib)
    pids = Enum.map(leakers, &elem(&1, 0))

    {:ok, dry} = Binscope.leaks(mode: :dry_run, limit: 10)
    assert Enum.all?(dry, &is_nil(&1.reclaimed_bytes))

    for {pid, dropped} <- leakers do
      assert %{estimated_bytes: ^dropped} = Enum.find(dry, &(&1.pid == pid))
      # Nothing was collected: the garbage is still there.
      assert vm_binary_bytes(pid) >= dropped
    end

    {:ok, full} = Binscope.leaks(mode: :full, limit: 2)
    assert Enum.map(full, & &1.pid) == Enum.reverse(pids)
    assert Enum.map(full, & &1.reclaimed_bytes) == [6 * @mib, 3 * @mib]
    S.stop_all(idle ++ pids)
  end

  test "store binaries: reclaimed bytes are the real sizes and the store returns to baseline" do
    base = settle()
    {pid, dropped} = S.burst_then_idle(5, 2 * @mib, store: true)
    assert live().live_bytes == base.live_bytes + dropped
    {:ok, [r | _]} = Binscope.leaks(limit: 1, candidates: 5)
    assert r.pid == pid
    assert r.reclaimed_bytes == 10 * @mib
    assert r.reclaimed_binaries == 5
    assert settle() == base
    S.stop_all([pid])
  end

  test "a binary someone else still holds is not counted as reclaimed" do
    parent = self()
    shared = :binary.copy(<<9>>, 4 * @mib)

    pid =
      spawn(fn ->
        _ = byte_size(shared)
        send(parent, :touched)
        receive do: (:stop -> :ok)
      end)

    assert_receive :touched
    {:ok, found} = Binscope.leaks(mode: :full, limit: 50)
    r = Enum.find(found, &(&1.pid == pid))
    refute r && r.reclaimed_bytes >= 4 * @mib
    assert byte_size(shared) == 4 * @mib
    S.stop_all([pid])
  end

  test "sub-binaries pinning large parents get the :binary.copy suggestion" do
    # Slices of 64 bytes or less become heap binaries at the next GC and free their parent; a
    # 100-byte slice stays a sub-binary and pins it.
    {pid, parents} = S.slice_keeper(4, 2 * @mib, 100)
    {:ok, found} = Binscope.leaks(mode: :full, limit: 100)
    r = Enum.find(found, &(&1.pid == pid))
    assert r.suggestion == :binary_copy
    assert r.retained_binary_bytes == parents
    assert r.reason =~ "binary.copy"
    S.stop_all([pid])
  end

  test "an idle GenServer holding garbage gets :hibernate_after" do
    {:ok, agent} = Agent.start(fn -> nil end)
    Agent.update(agent, fn _ -> :binary.copy(<<1>>, 3 * @mib) end)
    Agent.update(agent, fn _ -> nil end)
    {:ok, found} = Binscope.leaks(limit: 5, candidates: 5)
    r = Enum.find(found, &(&1.pid == agent))
    assert r.reclaimed_bytes >= 3 * @mib
    assert r.suggestion == :hibernate_after
    Agent.stop(agent)
  end

  # Calls from this process and the processes it starts (leaks/1 scans in a process of its
  # own, Binscope.Scanner) to the given NIFs while `fun` runs, by function name.
  defp nif_calls(funs, fun) do
    me = self()
    tracer = spawn(fn -> count_calls(me, %{}) end)
    for f <- funs, do: :erlang.trace_pattern({Binscope.Native, f, :_}, true, [:global])
    :erlang.trace(me, true, [:call, :set_on_spawn, {:tracer, tracer}])

    try do
      fun.()
    after
      :erlang.trace(me, false, [:call, :set_on_spawn])
      for f <- funs, do: :erlang.trace_pattern({Binscope.Native, f, :_}, false, [:global])
    end

    send(tracer, :done)
    assert_receive {:calls, calls}, 5_000
    calls
  end

  defp count_calls(to, acc) do
    receive do
      {:trace, _, :call, {_, f, _}} -> count_calls(to, Map.update(acc, f, 1, &(&1 + 1)))
      :done -> send(to, {:calls, acc})
    end
  end

  test "one attribution per run in every mode; a full scan ranked and advised in two calls, not one per process" do
    {leakers, _} = Enum.unzip(for n <- 1..2, do: S.burst_then_idle(4, n * @mib))

    try do
      funs = [
        :accounting_attribute,
        :accounting_attribute_scans,
        :leaks_top_uss,
        :leaks_full_rank,
        :leaks_full_rank_round,
        :leaks_round_batch,
        :leaks_suggest
      ]

      for mode <- [:targeted, :dry_run] do
        calls = nif_calls(funs, fn -> {:ok, _} = Binscope.leaks(mode: mode) end)
        # The sweep (a basic scan of this node, which keeps no reply) attributed once; the
        # shortlist picked from its figures once.
        assert calls[:accounting_attribute_scans] == 1, "#{mode}: #{inspect(calls)}"
        assert calls[:accounting_attribute] == nil, "#{mode}: #{inspect(calls)}"
        assert calls[:leaks_top_uss] == 1, "#{mode}: #{inspect(calls)}"

        if mode == :targeted,
          do: assert(calls[:leaks_full_rank] == 1 and calls[:leaks_suggest] == 1, inspect(calls))
      end

      # Every process of the node collected, its lists handed to the NIF a window at a time
      # (this node's round keeps none in its results), then attributed before and after and
      # ranked in one call (no sweep first), the results advised in one.
      processes = :erlang.system_info(:process_count)
      calls = nif_calls(funs, fn -> {:ok, _} = Binscope.leaks(mode: :full) end)
      assert calls[:accounting_attribute] == nil, inspect(calls)
      assert calls[:accounting_attribute_scans] == nil, inspect(calls)
      assert calls[:leaks_full_rank] == nil, inspect(calls)
      assert calls[:leaks_full_rank_round] == 1 and calls[:leaks_suggest] == 1, inspect(calls)
      assert calls[:leaks_round_batch] in 1..div(processes, 16), inspect({processes, calls})
    after
      S.stop_all(leakers)
    end
  end
end
