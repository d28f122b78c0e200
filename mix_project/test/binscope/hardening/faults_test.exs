defmodule Binscope.Hardening.FaultsTest do
  use Binscope.StoreCase, async: false

  @mib 1024 * 1024

  test "owners killed in the middle of puts leave the counters exact" do
    base = settle()
    input = :binary.copy("k", 32 * @mib)

    refs =
      for round <- 1..20 do
        {pid, ref} =
          spawn_monitor(fn ->
            for _ <- 1..1000, do: Store.put!(input, label: :killed_mid_put)
          end)

        # Kill at varying points: before, during and between the dirty copies.
        Process.sleep(rem(round * 7, 13))
        Process.exit(pid, :kill)
        ref
      end

    # A process killed inside a dirty copy exits only when the copy returns, and its entries go
    # when its heap is freed after that (measured: up to ~60 ms after its DOWN while the dirty
    # schedulers work through the other copies). Exact means back to the baseline once they are
    # gone, and staying there.
    # Seen once on OTP 29: 32 MiB (one put) still reserved after the last DOWN, with the live
    # counters already back and settled. So the reservation too must come back within the
    # bound, not at once; a reservation never released still fails here.
    for ref <- refs, do: assert_receive({:DOWN, ^ref, :process, _, :killed}, 10_000)
    assert eventually(fn -> live() == base and Store.stats().reserved_bytes == 0 end, 5_000)
    assert settle() == base
    assert Store.live(label: :killed_mid_put) == []
    assert Store.stats().reserved_bytes == 0
  end

  test "a holder dies while another still holds the binary" do
    base = settle()
    [h1, h2] = [holder(), holder()]

    in_process(fn ->
      bin = Store.alloc!(@mib) && Store.alloc!(@mib)
      Enum.each([h1, h2], &send(&1, {:keep, bin}))
    end)

    Enum.each([h1, h2], &sync/1)
    assert live().live_bytes == base.live_bytes + @mib

    Process.exit(h1, :kill)
    Process.sleep(20)
    assert live().live_bytes == base.live_bytes + @mib, "h2 still holds it"

    stop(h2)
    assert settle() == base
  end

  test "reloading the NIF module while binaries are alive upgrades it in place; the store goes on" do
    bin = Store.put!(:binary.copy("r", 1000))
    before = Store.stats()

    # The same copy of the library takes over (its upgrade callback; a different copy is refused,
    # see reload_test.exs): same registry, so nothing is lost or counted twice.
    assert {:module, Binscope.Native} = :code.load_file(Binscope.Native)
    assert :code.purge(Binscope.Native) == false
    assert Store.stats() == before
    assert byte_size(bin) == 1000 and bin == :binary.copy("r", 1000)
    assert {:ok, "after"} = Store.put("after")
  end

  test "purging and reloading the NIF module (on a peer node) keeps counting the old binaries" do
    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
    {:ok, peer, _node} = :peer.start_link(%{connection: :standard_io, args: paths})

    try do
      result = :peer.call(peer, Binscope.Hardening.PurgeScenario, :run, [], 30_000)

      # Once the old instance is purged, the library loads again and finds the same registry:
      # the binary made before the reload is still counted, still readable, and released
      # exactly when its holder goes.
      assert %{
               held_size: 1_000_000,
               reload: {:module, Binscope.Native},
               live_before: 1,
               live_after_reload: 1,
               live_with_fresh: 2,
               old_binary_sum: 112_000_000,
               released_old: true,
               fresh: "made after the reload"
             } = result
    after
      :peer.stop(peer)
    end
  end
end
