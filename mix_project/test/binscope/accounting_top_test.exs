defmodule Binscope.AccountingTopTest do
  # top/2's ranking in Rust (Accounting.top_select/2, the accounting_top_* NIFs): the same
  # records, in the same order, as top/3 over every record of the scan.
  use ExUnit.Case, async: false

  alias Binscope.Accounting
  alias Binscope.Native

  # 24 idle processes with ties: binaries of one of two sizes, one to three of them, and heaps
  # of two sizes. Each has built its state and waits when this returns: their figures then
  # stay as they are between scans.
  defp population do
    me = self()

    pids =
      for i <- 1..24 do
        spawn(fn ->
          bins = for _ <- 1..(rem(i, 3) + 1), do: :binary.copy(<<i>>, 100_000 * (rem(i, 2) + 1))
          heap = if rem(i, 4) == 0, do: Enum.to_list(1..20_000), else: []
          send(me, {:ready, self()})
          receive do: (:stop -> {bins, heap})
        end)
      end

    for pid <- pids, do: assert_receive({:ready, ^pid})
    pids
  end

  defp stop(pids), do: Enum.each(pids, &send(&1, :stop))

  # The metrics each detail ranks by (every field of its records but the derived estimates).
  defp metrics(:basic), do: Binscope.Accounting.Options.basic_metrics()

  defp metrics(:full) do
    Binscope.Accounting.Options.metrics() -- [:native_bytes, :native_estimated_bytes]
  end

  test "over the collector's records, every metric ranks as top/3 ranks the built records" do
    pids = population()

    for detail <- [:basic, :full] do
      # One raw snapshot, attributed twice: the two rankings see the same figures.
      raw = :binscope_collector.snapshot(%{detail: detail})
      all = Accounting.attribute(raw, 0).processes

      for metric <- metrics(detail), k <- [1, 7, 30, length(all) + 5] do
        select = Accounting.top_select(metric, k)
        picked = Accounting.attribute(raw, 0, :infinity, select).processes
        want = Accounting.top(all, k, metric)
        assert picked == want, "#{detail} #{metric} k=#{k}"
      end
    end

    assert Accounting.top_select(:native_bytes, 3) == nil
    stop(pids)
  end

  test "a compact scan's ranking matches top/3 over the same scan's records" do
    pids = population()
    mine = MapSet.new(pids)

    for metric <- metrics(:basic) do
      # Two scans of idle processes: their figures are the same in both, and the pids keep
      # their scan order. Only these 24 are compared (others on the node may change between).
      {:ok, snap} = Binscope.snapshot(detail: :basic, top_shared: 0)
      want = snap.processes |> Accounting.top(1_000_000, metric) |> Enum.filter(&(&1.pid in mine))

      {:ok, top} = Binscope.top(1_000_000, by: metric, detail: :basic)
      got = Enum.filter(top, &(&1.pid in mine))

      assert Enum.map(got, &{&1.pid, Map.fetch!(&1, metric)}) ==
               Enum.map(want, &{&1.pid, Map.fetch!(&1, metric)}),
             inspect(metric)

      assert Enum.map(got, &Map.fetch!(&1, metric)) == Enum.map(want, &Map.fetch!(&1, metric))
    end

    stop(pids)
  end

  # Five pids in term order (the smallest first).
  defp pids(n), do: Enum.sort(for(_ <- 1..n, do: spawn(fn -> :ok end)))

  test "top/3 ranks an unknown figure below every known one, equal ones the larger pid first" do
    [a, b, c, d, e] = pids(5)

    records = [
      %{pid: a, m: 5},
      %{pid: b, m: nil},
      %{pid: c, m: 7},
      %{pid: d, m: 5},
      %{pid: e, m: 0}
    ]

    assert Enum.map(Accounting.top(records, 5, :m), & &1.pid) == [c, d, a, e, b]
    assert Enum.map(Accounting.top(Enum.reverse(records), 5, :m), & &1.pid) == [c, d, a, e, b]
    # By a function of the record (a growth): negative figures still rank above unknown ones.
    by_growth = Accounting.top(records, 5, &(&1.m && &1.m - 6))
    assert Enum.map(by_growth, & &1.pid) == [c, d, a, e, b]
  end

  test "growth over a window: unknown at either end is unknown, ranked last; born ones grew from 0" do
    [a, b, c, d, e] = pids(5)
    before = %{a => 10, b => nil, c => 5, d => 7}

    records = [
      %{pid: a, m: 4},
      %{pid: b, m: 9},
      %{pid: c, m: nil},
      %{pid: d, m: 9},
      %{pid: e, m: 3}
    ]

    ranked = Binscope.Memory.Growth.rank(before, records, :m, 100, 5)

    assert Enum.map(ranked, &{&1.pid, &1.growth, &1.growth_from}) ==
             [{e, 3, nil}, {d, 2, 7}, {a, -6, 10}, {c, nil, 5}, {b, nil, nil}]

    assert Enum.all?(ranked, &(&1.window_ms == 100))
    assert length(Binscope.Memory.Growth.rank(before, records, :m, 100, 2)) == 2
  end

  test "the NIFs rank records and packed rows alike, and refuse what is not one" do
    [a, b, c, d, e] = ps = pids(5)
    # Scan order is not pid order: ties go to the larger pid wherever it was scanned.
    records = for {p, v} <- [{d, 5}, {b, :undefined}, {c, 7}, {a, 5}, {e, 0}], do: {:r, p, v}
    assert Native.accounting_top_records(records, 2, 5) == [2, 0, 3, 4, 1]
    assert Native.accounting_top_records(records, 2, 2) == [2, 0]
    assert Native.accounting_top_records([], 2, 2) == []

    packed = for v <- [5, 9, 7, 5, 0], into: <<>>, do: <<1::64-native, v::64-native>>
    # The pids in chunks (a compact scan's shares), or records.
    assert Native.accounting_top_packed(packed, 2, 1, [[a, b], [c, d, e]], 3) == [1, 2, 3]
    assert Native.accounting_top_packed(packed, 2, 1, [records], 5) == [1, 2, 0, 3, 4]
    # Any k: never more than the rows.
    assert Native.accounting_top_packed(packed, 2, 1, [ps], 2 ** 64 - 1) == [1, 2, 3, 0, 4]

    for bad <- [
          fn -> Native.accounting_top_records([{:r, a, :other}], 2, 1) end,
          fn -> Native.accounting_top_records([{:r, a, -1}], 2, 1) end,
          fn -> Native.accounting_top_records([{:r, :not_a_pid, 1}], 2, 1) end,
          fn -> Native.accounting_top_records([{:r, a}], 2, 1) end,
          fn -> Native.accounting_top_records([{:r, a, 1}], 1, 1) end,
          fn -> Native.accounting_top_records([:not_a_tuple], 2, 1) end,
          fn -> Native.accounting_top_records(:not_a_list, 2, 1) end,
          fn -> Native.accounting_top_packed(binary_part(packed, 0, 12), 2, 1, [ps], 1) end,
          fn -> Native.accounting_top_packed(packed, 2, 2, [ps], 1) end,
          fn -> Native.accounting_top_packed(packed, 0, 0, [ps], 1) end,
          fn -> Native.accounting_top_packed(packed, 2, 1, [tl(ps)], 1) end,
          fn -> Native.accounting_top_packed(packed, 2, 1, [[1, 2, 3, 4, 5]], 1) end,
          fn -> Native.accounting_top_packed(packed, 2, 1, ps, 1) end
        ] do
      assert_raise ArgumentError, bad
    end
  end
end
