defmodule Binscope.Bench.SmokeTest do
  # Smoke mode: every bench suite at tiny sizes, in the default `mix test`, so the suites never
  # rot. Asserts correctness only (counts, bytes, reports written), never timings.
  use Binscope.StoreCase, async: false

  alias Binscope.Bench.Report
  alias Binscope.Bench.Suite.{GcStrategies, Scan, StoreVm}

  defp otp_release, do: :erlang.system_info(:otp_release) |> List.to_integer()

  test "store vs VM suite" do
    base = settle()
    dir = tmp_dir("store_vm")
    o = StoreVm.smoke_opts()
    r = StoreVm.run(o)

    assert Enum.map(r.cycle, &elem(&1, 0)) == o[:sizes]

    for {size, cmp} <- r.cycle, res <- cmp.results do
      # Every call made one binary of `size` bytes (charged in full to the virtual binary heap),
      # except the lab's resource-binary floors on OTP 27+, which the VM charges at their small
      # wrapper (the store corrects that for its own binaries: Binscope.Store.GcPressure).
      unless String.starts_with?(res.name, "floor: ") and otp_release() >= 27,
        do: assert_in_delta(res.binary_bytes, size, size * 0.02, "#{res.name} @ #{size}")

      store? = String.starts_with?(res.name, "Store.")
      assert res.store_allocs == if(store?, do: 1.0, else: 0.0), res.name
      assert res.throughput > 0
      assert cmp.left_behind.store_bytes == 0
    end

    held = Map.new(r.intern, fn {d, _cmp, held} -> {d, held} end)
    size = o[:intern_size]
    n = o[:intern_count]
    assert held[0]["Store.intern"] == n * size
    assert held[0]["Store.put"] == n * size
    # 99% of 20 inputs: 19 copies of one template and 1 unique input: two distinct contents.
    assert held[99]["Store.intern"] == 2 * size
    assert held[50]["Store.intern"] == (n - div(n, 2) + 1) * size

    assert {:ok, paths} = Report.write("store_vm", r.report, dir)
    assert File.read!(Path.join(dir, "store_vm.csv")) =~ "1 KiB,Store.put,"
    # The put built up piece by piece: a row per size, each step a ratio.
    ladder = Enum.find(r.report.tables, &String.starts_with?(&1.title, "a resource-binary put"))
    assert Enum.map(ladder.rows, &hd/1) == ["1 KiB", "64 KiB"]
    assert Enum.all?(ladder.rows, fn row -> row |> tl() |> tl() |> Enum.all?(&(&1 =~ ~r/x$/)) end)
    assert Path.join(dir, "store_vm.svg") in paths
    assert settle().live_bytes == base.live_bytes
  end

  test "intern inputs have the asked share of duplicates, each in its own memory" do
    inputs = StoreVm.inputs(100, 64, 50)
    assert length(inputs) == 100
    assert inputs |> Enum.uniq() |> length() == 51
    assert Enum.all?(inputs, &(byte_size(&1) == 64))
    assert StoreVm.inputs(10, 16, 0) |> Enum.uniq() |> length() == 10
    assert StoreVm.inputs(10, 16, 100) |> Enum.uniq() |> length() == 1
  end

  test "GC strategies suite" do
    dir = tmp_dir("gc")
    o = GcStrategies.smoke_opts()
    r = GcStrategies.run(o)

    for {shape, cmp} <- r.cells do
      spec = o[:shapes][shape]
      assert Enum.map(cmp.results, & &1.name) == GcStrategies.strategies()

      for res <- cmp.results do
        # Every packet was routed and delivered exactly once.
        assert res.custom[:delivered].median == spec[:bursts] * spec[:burst],
               "#{shape} #{res.name}"

        assert res.custom[:throughput].median > 0
        assert res.custom[:peak_bytes].median >= res.custom[:mean_bytes].median
      end
    end

    assert Enum.map(r.decisions, & &1.shape) == [:steady, :bursty, :idle]
    assert Enum.all?(r.decisions, &(&1.recommended in GcStrategies.strategies()))
    assert {:ok, _} = Report.write("gc_strategies", r.report, dir)
    assert File.read!(Path.join(dir, "gc_strategies.md")) =~ "## decision table"
  end

  test "scan suite" do
    dir = tmp_dir("scan")
    o = Scan.smoke_opts()
    r = Scan.run(o)
    [{n, cmp, idle}] = r.cells
    assert n == hd(o[:counts])
    assert Enum.map(cmp.results, & &1.name) == Scan.operations()
    assert is_integer(idle.max)

    for res <- cmp.results do
      seen = res.custom[:processes_seen].median
      # processes() lists at least the planted population; the others return their top 10.
      if res.name == "processes()", do: assert(seen >= n), else: assert(seen == 10)
    end

    assert {:ok, _} = Report.write("scan", r.report, dir)
  end

  defp tmp_dir(name) do
    dir =
      Path.join(System.tmp_dir!(), "binscope-smoke-#{name}-#{System.unique_integer([:positive])}")

    on_exit(fn -> File.rm_rf(dir) end)
    dir
  end
end
