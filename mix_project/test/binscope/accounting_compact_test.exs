defmodule Binscope.AccountingCompactTest do
  # A basic snapshot of this node keeps no reply: the collector hands the replies' figures to the
  # NIF in batches (`:binscope_collector_compact`) and the records are built from the NIF's
  # figures. These tests prove that path gives exactly the records, summary and most shared
  # binaries of the records scan (which remote nodes without Binscope still run), on a
  # population that takes every branch: shared binaries, store binaries (resolved), lists
  # longer than a batch takes, labels (OTP 27+), registered names, reductions, workers and
  # presampled pids; and that the NIF refuses a malformed batch without adding any of it.
  use Binscope.StoreCase, async: false

  require Binscope.Collector, as: Collector

  alias Binscope.Accounting
  alias Binscope.LeakScenario, as: S

  @labels function_exported?(:proc_lib, :set_label, 1)
  @procs 9_000

  setup do
    me = self()
    shared = :binary.copy(<<1>>, 10_001)

    pids =
      for i <- 1..@procs do
        # (Only the kind goes into the closure: a closure over the shared binary made every
        # process a holder.)
        kind =
          cond do
            # Lists longer than one batch takes (4096 references): read by the attribution.
            rem(i, 3000) == 0 -> :long
            rem(i, 1000) == 0 -> :store
            # 10_001 bytes among 891 holders: PSS split with a remainder.
            rem(i, 10) == 0 -> :shared
            true -> :own
          end

        pid =
          spawn(fn ->
            if @labels and rem(i, 500) == 0, do: apply(:proc_lib, :set_label, [{:compact, i}])
            if i == 7, do: Process.register(self(), :binscope_compact_test)

            held =
              case kind do
                :long -> for k <- 1..5_000, do: :binary.copy(<<k::32>>, 20)
                :store -> Store.alloc!(10_000 + i)
                :shared -> receive(do: ({:shared, b} -> b))
                :own -> :binary.copy(<<i::32>>, 25)
              end

            send(me, {:ready, self()})

            receive do
              :stop -> held
            end
          end)

        if kind == :shared, do: send(pid, {:shared, shared})
        pid
      end

    for p <- pids, do: assert_receive({:ready, ^p}, 5_000)
    on_exit(fn -> S.stop_all(pids) end)
    %{pids: pids}
  end

  # The records of both scans of `pids`; reductions move between two scans, so only their
  # presence is compared.
  defp both(pids, opts, select \\ nil) do
    # The setup's reference to the shared binary is let go first: both scans see the same
    # reference counts.
    :erlang.garbage_collect()
    opts = Map.merge(%{pids: pids, detail: :basic}, opts)
    plain = Accounting.attribute(:binscope_collector.snapshot(opts), 10, :infinity, select)
    raw = :binscope_collector.snapshot(Map.put(opts, :compact, true))
    assert [Collector.scan() | _] = raw.procs
    compact = Accounting.attribute(raw, 10, :infinity, select)
    {stable(plain), stable(compact), raw}
  end

  # Equal, or the first record that differs (the whole lists are too long to read).
  defp same!({recs, summary, top}, {want, want_summary, want_top}, what \\ "") do
    diff = Enum.zip(recs, want) |> Enum.find(fn {a, b} -> a != b end)
    assert diff == nil, "#{what}: #{inspect(diff)}"
    assert length(recs) == length(want)
    assert summary == want_summary, "#{what}: #{inspect({summary, want_summary})}"
    assert top == want_top, what
  end

  defp stable(s) do
    recs =
      for r <- s.processes do
        Map.update(r, :reductions, :absent, &is_integer/1)
      end

    {recs, s.summary, s.top_shared}
  end

  test "gives the records, summary and shared binaries of the records scan", %{pids: pids} do
    {plain, compact, raw} = both(pids, %{})
    same!(compact, plain)
    {recs, summary, top} = compact
    assert length(recs) == @procs
    assert Enum.map(recs, & &1.pid) == pids

    # Every branch was taken: store binaries (resolved at their real size, by the batches), long
    # lists (left to the attribution) and the shared binary.
    pending = for Collector.scan(pending: p) <- raw.procs, {_i, _bins} <- p, do: 1
    assert length(pending) == 3

    stores = [1000, 2000, 4000, 5000, 7000, 8000]
    for i <- stores, do: assert(Enum.at(recs, i - 1).native_store_bytes == 10_000 + i)
    assert summary.store_bytes >= Enum.sum(for i <- stores, do: 10_000 + i)

    assert Enum.sum(Enum.map(recs, & &1.binary_pss)) == summary.unique_bytes
    [%{size: 10_001, holders: holders} | _] = top
    assert holders == length(for i <- 1..@procs, rem(i, 10) == 0, rem(i, 1000) != 0, do: i)

    assert Enum.find(recs, &(&1.registered_name == :binscope_compact_test)).pid ==
             Enum.at(pids, 6)

    if @labels do
      assert Enum.count(recs, &match?({:compact, _}, &1.label)) == div(@procs, 500)
    end

    long = Enum.at(recs, 2999)
    assert long.binary_refs == 5_000 and long.binary_uss == 5_000 * 80
  end

  test "with reductions, workers and presampled pids, and with a selection", %{pids: pids} do
    for opts <- [
          %{reductions: true},
          %{workers: 2},
          %{reductions: true, window_ms: 2, workers: 2}
        ] do
      {plain, compact, raw} = both(pids, opts)
      same!(compact, plain, inspect(opts))
      if opts[:workers], do: assert(raw.workers == 2 and length(raw.procs) > 1)
    end

    # Indexes in any order, one twice: records in that order.
    select = fn %{shares: shares} -> [div(byte_size(shares), 64) - 1, 0, 2999, 0, 4567] end
    {plain, compact, _raw} = both(pids, %{reductions: true}, select)
    same!(compact, plain)
    {recs, _, _} = compact

    assert Enum.map(recs, & &1.pid) ==
             Enum.map([@procs - 1, 0, 2999, 0, 4567], &Enum.at(pids, &1))
  end

  test "Binscope's basic snapshots of this node take it; full ones and the records scan do not",
       %{pids: pids} do
    Code.ensure_loaded!(:binscope_collector_compact)
    :erlang.trace_pattern({:binscope_collector_compact, :scan, 2}, true, [:call_count])

    try do
      count = fn ->
        {:call_count, n} =
          :erlang.trace_info({:binscope_collector_compact, :scan, 2}, :call_count)

        n
      end

      {:ok, _} = Binscope.snapshot(pids: pids, detail: :full)
      {:ok, _} = Binscope.processes(pids: pids, detail: :full)
      assert count.() == 0
      {:ok, s} = Binscope.snapshot(pids: pids, detail: :basic)
      assert count.() == 1
      {:ok, all} = Binscope.processes(detail: :basic)
      assert count.() >= 2
      assert length(s.processes) == @procs and length(all) >= @procs
    after
      :erlang.trace_pattern({:binscope_collector_compact, :scan, 2}, false, [:call_count])
    end
  end

  test "the NIF refuses a malformed batch and adds none of it" do
    n = Binscope.Native
    scan = n.accounting_scan_new(nil, 0)
    bin = {0x1000, 100, 1}

    for bad <- [
          [[bin], 10],
          [[{1, 2}], 10, 0],
          [[bin], -1, 0],
          [:nope, 10, 0],
          [[bin], 10, 0, [bin], 10],
          [for(k <- 1..4097, do: {k, 1, 1}), 10, 0],
          # Store binaries to resolve, in a scan that resolves none; a malformed marker.
          [{[bin]}, 10, 0],
          [{[bin], 1}, 10, 0],
          [{7}, 10, 0],
          :not_a_list
        ] do
      assert_raise ArgumentError, fn -> n.accounting_scan_batch(scan, bad) end
    end

    # Newest first: the second process (listed bytes 5, its list pending) came after the first.
    assert n.accounting_scan_batch(scan, [5, 30, 3, [bin, bin], 20, 2])

    {shares, extra, summary, [{0x1000, 100, 2, 1}]} =
      n.accounting_attribute_scans([{scan, [{1, [bin]}]}], 10)

    assert summary.processes == 2 and summary.refs == 3
    assert byte_size(shares) == 2 * 64

    assert <<20::64-native, 200::64-native, 2::64-native, 30::64-native, 5::64-native,
             3::64-native>> = extra

    # Each pending process needs its list, and no other process may have one.
    assert_raise ArgumentError, fn -> n.accounting_attribute_scans([{scan, []}], 10) end

    assert_raise ArgumentError, fn ->
      n.accounting_attribute_scans([{scan, [{0, [bin]}, {1, [bin]}]}], 10)
    end

    fresh = n.accounting_scan_new(nil, 0)
    assert_raise ArgumentError, fn -> n.accounting_attribute_scans([{fresh, [{0, []}]}], 10) end
  end
end
