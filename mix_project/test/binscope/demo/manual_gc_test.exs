defmodule Binscope.Demo.ManualGcTest do
  use Binscope.StoreCase, async: false

  alias Binscope.Demo.ManualGc

  @moduletag :tmp_dir

  test "after the manual GC, binary bytes fall by >= 95% of what was dropped", %{tmp_dir: dir} do
    base = settle()

    r =
      ManualGc.run(
        scale: 0.1,
        size: 128 * 1024,
        label: :demo_manual_gc_test,
        quiet: true,
        idle_ms: 20,
        report_dir: dir
      )

    # The idle process still references what it dropped...
    assert r.before.pinfo_bytes >= r.dropped
    assert r.before.store_count == r.count
    # ...and the manual GC frees at least 95% of the dropped bytes.
    assert r.before.pinfo_bytes - r.after.pinfo_bytes >= 0.95 * r.dropped
    assert r.after.store_count == 0 and r.after.store_bytes == 0
    assert r.gc_us >= 0
    # Binscope counts both halves at real size: all of it is held by this process alone; the
    # dry run (no GC) estimates exactly that, and the GC reclaims >= 95% of it.
    assert r.before.uss >= 2 * r.dropped
    # process_info(:binary) misses the store half, unless the GC pressure patch (OTP 27+) lists
    # store binaries at their real size.
    if Binscope.Store.GcPressure.listed_at_real_size?(),
      do: assert(r.before.pinfo_bytes >= r.before.uss),
      else: assert(r.before.pinfo_bytes < r.before.uss)

    assert r.dry_run_estimate == r.before.uss
    assert r.reclaimed >= 0.95 * 2 * r.dropped
    # The store's live count is back at its baseline.
    assert eventually(fn -> live() == base end)
    assert File.read!(r.chart) =~ "manual GC"
  end
end
