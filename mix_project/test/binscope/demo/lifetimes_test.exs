defmodule Binscope.Demo.LifetimesTest do
  use Binscope.StoreCase, async: false

  alias Binscope.Demo.Lifetimes

  @moduletag :tmp_dir

  test "workers leave no store entries; the idle server keeps garbage until a GC", %{tmp_dir: dir} do
    settle()
    label = :demo_lifetimes_test
    r = Lifetimes.run(scale: 0.1, size: 64 * 1024, label: label, quiet: true, report_dir: dir)

    assert r.same_results?
    assert r.after_workers == %{store_count: 0, store_bytes: 0}
    assert r.server_idle.store_count >= 1
    assert r.server_idle.store_bytes == r.server_idle.store_count * 64 * 1024
    # Binscope.processes counts the server's dead payloads at their real size, the store's figure;
    # process_info(:binary) lists each at a few dozen bytes (at its real size where the GC
    # pressure patch is on, OTP 27+).
    assert r.server_idle.native_store == r.server_idle.store_bytes
    assert r.server_idle.bin_uss >= r.server_idle.store_bytes

    if Store.GcPressure.listed_at_real_size?(),
      do: assert(r.server_idle.bin_bytes >= r.server_idle.store_bytes),
      else: assert(r.server_idle.bin_bytes < r.server_idle.store_bytes)

    assert r.server_collected.store_count == 0 and r.server_collected.store_bytes == 0
    assert r.server_collected.heap < r.server_idle.heap
    assert eventually(fn -> Map.get(Store.by_label(), label, %{count: 0}).count == 0 end)
    assert File.read!(r.chart) =~ "manual GC"
  end
end
