defmodule Binscope.StoreTest do
  use Binscope.StoreCase, async: false

  doctest Binscope.Store
  doctest Binscope.Render.Format
  doctest Binscope.Render.Table

  @mib 1024 * 1024

  describe "store binaries behave like any binary" do
    test "byte_size, matching, sub-binaries and copies" do
      in_process(fn ->
        {:ok, bin} = Store.put("header:" <> :binary.copy("x", 100))
        assert byte_size(bin) == 107
        assert <<"header:", rest::binary>> = bin
        assert rest == :binary.copy("x", 100)
        assert binary_part(bin, 0, 6) == "header"
        assert :binary.copy(bin) == bin
        assert :erlang.phash2(bin) == :erlang.phash2("header:" <> :binary.copy("x", 100))
      end)
    end

    test "alloc zero-fills or fills with a byte" do
      in_process(fn ->
        assert Store.alloc!(5) == <<0, 0, 0, 0, 0>>
        assert Store.alloc!(3, fill: 255) == <<255, 255, 255>>
        assert Store.alloc!(0) == ""
        big = Store.alloc!(3 * @mib, fill: 7)
        assert byte_size(big) == 3 * @mib
        assert :binary.at(big, 3 * @mib - 1) == 7
      end)
    end

    test "survive message passing and outlive the sender" do
      base = live()
      receiver = holder()
      sender = spawn(fn -> send(receiver, {:keep, Store.alloc!(@mib, fill: 1)}) end)
      ref = Process.monitor(sender)
      assert_receive {:DOWN, ^ref, :process, ^sender, _}
      sync(receiver)
      assert live().live_bytes == base.live_bytes + @mib
      drop_all(receiver)
      assert eventually(fn -> live() == base end)
      stop(receiver)
    end

    test "survive ETS: the table keeps them alive until the row is deleted" do
      base = live()
      table = :ets.new(:store_test, [:public])

      in_process(fn -> :ets.insert(table, {:k, Store.alloc!(2 * @mib, fill: 3)}) end)
      assert live().live_bytes == base.live_bytes + 2 * @mib
      assert [{:k, bin}] = :ets.lookup(table, :k)
      assert byte_size(bin) == 2 * @mib
      _ = bin

      # The lookup put a reference on this test process's heap too; drop both.
      :ets.delete(table, :k)
      :erlang.garbage_collect()
      assert eventually(fn -> live() == base end)
      :ets.delete(table)
    end

    test "a sent sub-binary over 64 bytes keeps the whole native parent alive" do
      base = live()
      h = holder()

      in_process(fn ->
        parent = Store.alloc!(4 * @mib, fill: 9)
        send(h, {:keep, binary_part(parent, 10, 100)})
      end)

      sync(h)
      assert live().live_bytes == base.live_bytes + 4 * @mib
      drop_all(h)
      assert eventually(fn -> live() == base end)
      stop(h)
    end

    test "a sent slice of 64 bytes or less is copied, so the parent is released" do
      base = live()
      h = holder()

      in_process(fn ->
        parent = Store.alloc!(4 * @mib, fill: 9)
        send(h, {:keep, binary_part(parent, 10, 64)})
      end)

      sync(h)
      assert eventually(fn -> live() == base end)
      stop(h)
    end
  end

  describe "large puts" do
    # From 256 KiB a put copies in 64 KiB steps on a normal scheduler and, past its budget, goes
    # on where it stopped on a dirty one (store.rs, `store_put_large`). Sizes around the step
    # and the streaming threshold, and one that always outlasts the budget.
    test "give back every byte of the source at every size, whichever scheduler finished them" do
      step = 64 * 1024

      for size <- [
            256 * 1024,
            256 * 1024 + 1,
            8 * step - 1,
            8 * step,
            8 * step + 63,
            64 * @mib + 3
          ] do
        input =
          for(i <- 0..255, into: <<>>, do: <<i, 255 - i>>) |> :binary.copy(div(size, 512) + 2)

        input = binary_part(input, 7, size)
        base = Store.stats()

        in_process(fn ->
          bin = Store.put!(input, label: :large_put)
          assert bin == input, "put of #{size} bytes"
          s = Store.stats()

          assert {s.live_bytes, s.allocs, s.reserved_bytes} ==
                   {base.live_bytes + size, base.allocs + 1, 0}
        end)

        assert eventually(fn -> live() == Map.take(base, [:live_count, :live_bytes]) end)
      end
    end

    # An alloc with a non-zero fill from 256 KiB is written in the same steps (`store_alloc_large`).
    test "allocs with a fill set every byte at every size, whichever scheduler finished them" do
      step = 64 * 1024

      for size <- [256 * 1024, 256 * 1024 + 1, 8 * step - 1, 8 * step + 63, 64 * @mib + 3] do
        base = Store.stats()

        in_process(fn ->
          bin = Store.alloc!(size, fill: 0xA7, label: :large_alloc)
          assert byte_size(bin) == size
          assert bin == :binary.copy(<<0xA7>>, size), "alloc of #{size} bytes"
          s = Store.stats()

          assert {s.live_bytes, s.allocs, s.reserved_bytes} ==
                   {base.live_bytes + size, base.allocs + 1, 0}
        end)

        assert eventually(fn -> live() == Map.take(base, [:live_count, :live_bytes]) end)
      end
    end
  end

  describe "exact counters" do
    test "return to exactly the baseline after owners die and holders collect" do
      base = Store.stats()
      holders = for _ <- 1..4, do: holder()

      in_process(fn ->
        for i <- 1..40 do
          bin = Store.alloc!(1000 + i, label: :exact)
          send(Enum.at(holders, rem(i, 4)), {:keep, bin})
        end
      end)

      Enum.each(holders, &sync/1)
      mid = Store.stats()
      assert mid.live_count == base.live_count + 40
      assert mid.live_bytes == base.live_bytes + Enum.sum(1001..1040)
      assert mid.allocs == base.allocs + 40

      Enum.each(holders, &drop_all/1)
      assert eventually(fn -> live() == Map.take(base, [:live_count, :live_bytes]) end)
      final = Store.stats()
      assert final.frees == base.frees + 40
      assert final.live_count == final.allocs - final.frees
      Enum.each(holders, &stop/1)
    end

    test "peak_bytes records the high-water mark" do
      in_process(fn ->
        _held = Store.alloc!(8 * @mib)
        assert Store.stats().peak_bytes >= Store.stats().live_bytes
        assert Store.stats().peak_bytes >= 8 * @mib
      end)
    end
  end

  describe "labels, owners and the live report" do
    test "by_label counts atoms and strings separately, with peaks, and forgets dead labels" do
      in_process(fn ->
        a = Store.alloc!(10, label: :lbl_test)
        b = Store.alloc!(50, label: "lbl_test")

        in_process(fn ->
          _c = Store.alloc!(100, label: :lbl_test)
          labels = Store.by_label()
          assert %{count: 2, bytes: 110, peak_bytes: 110} = labels[:lbl_test]
          assert %{count: 1, bytes: 50} = labels["lbl_test"]
        end)

        assert %{count: 1, bytes: 10, peak_bytes: 110} = Store.by_label()[:lbl_test]
        # Held until here.
        {a, b}
      end)

      # The last entry gone, the label is reclaimed (and a reused one starts from zero).
      assert eventually(fn -> not Map.has_key?(Store.by_label(), :lbl_test) end)
      refute Map.has_key?(Store.by_label(), "lbl_test")

      in_process(fn ->
        d = Store.alloc!(1, label: :lbl_test)
        assert %{count: 1, bytes: 1, peak_bytes: 1} = Store.by_label()[:lbl_test]
        d
      end)
    end

    @tag timeout: 300_000
    test "70,000 short-lived string labels never exhaust the label table" do
      in_process(fn ->
        for i <- 1..70_000 do
          assert {:ok, _} = Store.put("x", label: "req-#{i}")
          # Drop it: a fresh heap every 1000 puts frees the binaries made so far.
          if rem(i, 1000) == 0, do: :erlang.garbage_collect()
        end
      end)

      assert eventually(fn -> Store.stats().label_count < 1000 end)
      assert {:ok, _} = Store.put("y", label: "req-fresh")
      assert {:ok, _} = Store.put("z")
    end

    test "string labels never become atoms" do
      name = "never_an_atom_#{System.unique_integer([:positive])}"
      in_process(fn -> Store.put!("x", label: name) end)
      assert_raise ArgumentError, fn -> String.to_existing_atom(name) end
    end

    test "by_owner and live/1 report binaries that outlive their owner" do
      h = holder()
      parent = self()

      owner =
        spawn(fn ->
          send(h, {:keep, Store.alloc!(3000, label: :orphan_test)})
          send(parent, :made)
          receive do: (:exit -> :ok)
        end)

      assert_receive :made
      sync(h)
      assert %{count: 1, bytes: 3000, alive?: true} = Store.by_owner()[owner]
      assert [%{owner: ^owner, owner_alive?: true, size: 3000}] = Store.live(label: :orphan_test)

      ref = Process.monitor(owner)
      send(owner, :exit)
      assert_receive {:DOWN, ^ref, :process, ^owner, _}

      assert eventually(fn -> Store.by_owner()[owner][:alive?] == false end)
      assert [%{owner_alive?: false, age_ms: age}] = Store.live(label: :orphan_test)
      assert age >= 0

      drop_all(h)
      assert eventually(fn -> Store.by_owner()[owner] == nil end)
      assert Store.live(label: :orphan_test) == []
      stop(h)
    end

    test "an explicit owner is accounted instead of the caller" do
      other = holder()

      in_process(fn ->
        _bin = Store.alloc!(10, owner: other, label: :explicit_owner)
        assert [%{owner: ^other}] = Store.live(label: :explicit_owner)
      end)

      stop(other)
    end

    test "live/1 filters by owner, age and limit, oldest first" do
      in_process(fn ->
        bins = for i <- 1..5, do: Store.alloc!(i, label: :live_filters)
        ids = Store.live(label: :live_filters) |> Enum.map(& &1.id)
        assert length(ids) == 5
        assert ids == Enum.sort(ids)
        assert length(Store.live(label: :live_filters, limit: 2)) == 2
        assert Store.live(label: :live_filters, older_than: 60_000) == []
        Process.sleep(30)
        assert length(Store.live(label: :live_filters, older_than: 10)) == 5
        assert length(Store.live(owner: self(), label: :live_filters)) == 5
        _ = bins
      end)
    end
  end

  describe "dedup" do
    test "identical content shares one native allocation while any holder lives" do
      base = Store.stats()
      h1 = holder()
      h2 = holder()
      content = :binary.copy("dedup!", 10_000)

      in_process(fn ->
        send(h1, {:keep, Store.intern!(content)})
        send(h2, {:keep, Store.intern!(content)})
      end)

      Enum.each([h1, h2], &sync/1)
      s = Store.stats()
      assert s.live_count == base.live_count + 1
      assert s.live_bytes == base.live_bytes + byte_size(content)
      assert s.dedup_hits == base.dedup_hits + 1
      assert s.dedup_saved_bytes == base.dedup_saved_bytes + byte_size(content)

      drop_all(h1)
      assert live().live_count == base.live_count + 1, "h2 still holds it"
      drop_all(h2)
      assert eventually(fn -> live() == Map.take(base, [:live_count, :live_bytes]) end)
      Enum.each([h1, h2], &stop/1)
    end

    test "different content is stored separately" do
      in_process(fn ->
        before = Store.stats()
        a = Store.intern!("content A " <> :binary.copy("a", 100))
        b = Store.intern!("content B " <> :binary.copy("a", 100))
        assert a != b
        assert Store.stats().live_count == before.live_count + 2
      end)
    end
  end

  describe "capacity" do
    test "a put over capacity returns {:error, :capacity} and allocates nothing" do
      in_process(fn ->
        base = Store.stats()
        :ok = Store.set_capacity(base.live_bytes + 10 * @mib)
        assert {:ok, a} = Store.alloc(6 * @mib)
        assert Store.alloc(5 * @mib) == {:error, :capacity}
        assert Store.put(:binary.copy("z", 5 * @mib)) == {:error, :capacity}
        assert_raise Binscope.Error, ~r/capacity/, fn -> Store.alloc!(5 * @mib) end
        after_refusals = Store.stats()
        assert after_refusals.allocs == base.allocs + 1
        assert after_refusals.live_bytes == base.live_bytes + 6 * @mib
        assert after_refusals.capacity == base.live_bytes + 10 * @mib
        assert {:ok, b} = Store.alloc(4 * @mib)
        # Keep both alive to here: an unused binary can be collected mid-test, freeing room.
        assert byte_size(a) + byte_size(b) == 10 * @mib
        :ok = Store.set_capacity(:infinity)
        assert Store.stats().capacity == :infinity
      end)
    end

    test "a dedup hit is allowed at capacity" do
      in_process(fn ->
        content = :binary.copy("c", 1000)
        first = Store.intern!(content)
        :ok = Store.set_capacity(Store.stats().live_bytes)
        assert {:ok, ^first} = Store.intern(content)
        assert Store.intern(:binary.copy("d", 1000)) == {:error, :capacity}
        assert byte_size(first) == 1000
      end)
    end
  end

  test "allocator/0 reports jemalloc figures that follow store allocations" do
    in_process(fn ->
      before = Store.allocator()
      assert Enum.all?(Map.values(before), &(is_integer(&1) and &1 >= 0))
      held = for _ <- 1..16, do: Store.alloc!(@mib, fill: 1)
      grown = Store.allocator()
      # jemalloc counts every native allocation; unrelated frees (earlier tests' binaries whose
      # last holder is collected meanwhile) may land in between: allow 1 MiB of them.
      assert grown.allocated - before.allocated >= 15 * @mib
      assert length(held) == 16
      assert grown.resident >= grown.allocated
    end)
  end

  test "allocator/0 reports the payload blocks the store keeps for reuse, within their bounds" do
    # 64 puts of 64 KiB, dropped: their blocks are released once the process is gone (in_process
    # waits for that) and kept by the releasing scheduler threads, 2 MiB a thread at most.
    in_process(fn ->
      for _ <- 1..64, do: byte_size(Store.put!(:binary.copy(<<1>>, 64 * 1024)))
    end)

    cached = Store.allocator().payload_cache_bytes
    assert cached > 0
    assert cached <= 32 * @mib
    assert rem(cached, 8 * 1024) == 0, "blocks come in size classes"
  end

  test "zeroed allocs leave alone the freed pages the next put would reuse" do
    # Four 16 MiB puts, dropped: jemalloc keeps their pages for the next payloads (its decay takes
    # 10 s). Zeroed allocs come from an arena of their own and do not touch them. In the shared
    # arenas one would take such a block and discard its pages, which the next put would then
    # fault back in one by one: the process's resident memory fell by 16 MiB (by `statm`;
    # jemalloc's own `resident` counts discarded pages as resident).
    # The VM may return memory of its own meanwhile (10 MiB once, on OTP 27): up to three tries,
    # one with the process's resident memory kept suffices; the discard happened on every try.
    src = :binary.copy(<<1>>, 16 * @mib)

    falls =
      Enum.reduce_while(1..3, [], fn _, falls ->
        in_process(fn -> for _ <- 1..4, do: byte_size(Store.put!(src)) end)
        before = resident_bytes()
        zeroed = for _ <- 1..4, do: Store.alloc!(16 * @mib)
        fell = before - resident_bytes()
        assert Enum.all?(zeroed, &(&1 == <<0::size(16 * @mib)-unit(8)>>))
        if fell < 8 * @mib, do: {:halt, :kept}, else: {:cont, [div(fell, @mib) | falls]}
      end)

    assert falls == :kept, "resident memory fell by #{inspect(falls)} MiB (newest first)"
  end

  defp resident_bytes do
    [_size, resident | _] = String.split(File.read!("/proc/self/statm"))
    String.to_integer(resident) * 4096
  end
end
