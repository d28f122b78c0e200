defmodule Binscope.Demo.StoreLifecycleTest do
  # The store demo's claims, asserted on the demo's own run/1 (small sizes).
  use Binscope.StoreCase, async: false

  alias Binscope.Demo.StoreLifecycle

  @size 256 * 1024

  test "store bytes follow the holders exactly, back to zero, while the VM sees ~nothing" do
    settle()
    # The contrast row reads the node-wide :erlang.memory(:binary); let binaries freed by
    # processes of earlier tests (exits land after DOWN) finish leaving it first.
    vm_binary_settle()
    r = StoreLifecycle.run(count: 20, size: @size, label: :demo_store_test)
    [held, orphaned, released, ordinary] = r.rows

    assert held.store_count == 20
    assert held.store_bytes == 20 * @size
    assert orphaned.store_count == r.shared
    assert orphaned.store_bytes == r.shared * @size
    assert r.orphans_reported == r.shared
    assert released.store_count == 0 and released.store_bytes == 0
    assert r.final_live_delta == 0 and r.final_bytes_delta == 0

    # The VM's own tools: each native binary is listed at well under 1% of its size, or at its
    # real size where the GC pressure patch writes it there (OTP 27+; the naive sum counts a
    # binary once per holder).
    if Store.GcPressure.listed_at_real_size?(),
      do: assert(held.pinfo_bytes >= held.store_bytes),
      else: assert(held.pinfo_bytes < div(held.store_bytes, 100))

    assert held.vm_binary_delta < div(held.store_bytes, 10)
    # ... while the same bytes as ordinary refc binaries are fully visible (the node-wide figure
    # also moves with other processes' binaries: allow 2% of it to have left meanwhile).
    assert ordinary.vm_binary_delta >= div(20 * @size * 98, 100)
    assert ordinary.pinfo_bytes == 20 * @size

    # Binscope.processes counts the same bytes as the store, each binary once over its holders.
    assert held.pss == 20 * @size
    assert orphaned.pss == r.shared * @size
    assert released.pss == 0
    assert ordinary.pss == 20 * @size

    # The per-binary size the text quotes is process_info's own figure for one store binary:
    # its magic binary's few dozen bytes, or its real size under the GC pressure patch.
    if Store.GcPressure.listed_at_real_size?(),
      do: assert(r.vm_seen_bytes == @size),
      else: assert(r.vm_seen_bytes > 0 and r.vm_seen_bytes < 1024)

    text = IO.iodata_to_binary(StoreLifecycle.render(r))
    assert text =~ "back to its baseline: 0 entries, 0 bytes"
    assert text =~ "at #{r.vm_seen_bytes} bytes"
  end

  defp vm_binary_settle(last \\ -1, same \\ 0, tries \\ 200)
  defp vm_binary_settle(_last, 5, _tries), do: :ok
  defp vm_binary_settle(_last, _same, 0), do: :ok

  defp vm_binary_settle(last, same, tries) do
    Process.sleep(10)
    now = :erlang.memory(:binary)
    vm_binary_settle(now, if(now == last, do: same + 1, else: 0), tries - 1)
  end
end
