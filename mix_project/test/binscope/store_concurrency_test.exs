defmodule Binscope.StoreConcurrencyTest do
  use Binscope.StoreCase, async: false

  @workers 64
  @rounds 200

  test "many processes putting, interning, sharing and dropping at once end at exactly zero" do
    base = live()
    sink = holder()
    parent = self()

    workers =
      for w <- 1..@workers do
        spawn_link(fn ->
          for r <- 1..@rounds do
            bin =
              case rem(r, 3) do
                0 -> Store.put!(:binary.copy(<<w>>, 100 + r), label: :concurrency)
                1 -> Store.alloc!(r * 10, label: "concurrency")
                2 -> Store.intern!(:binary.copy(<<rem(r, 5)>>, 500), label: :concurrency)
              end

            # Some binaries outlive their worker in a shared holder.
            if rem(r, 50) == 0, do: send(sink, {:keep, bin})
            if rem(r, 20) == 0, do: :erlang.garbage_collect()
          end

          send(parent, {:done, self()})
        end)
      end

    for w <- workers, do: assert_receive({:done, ^w}, 30_000)
    sync(sink)
    kept = div(@rounds, 50) * @workers
    assert Store.stats().live_count >= base.live_count + 1

    assert length(Store.live(label: :concurrency)) + length(Store.live(label: "concurrency")) <=
             kept + 5

    drop_all(sink)
    stop(sink)
    final = settle()
    assert final == base
    s = Store.stats()
    assert s.live_count == s.allocs - s.frees
    assert s.reserved_bytes == 0
  end

  test "the capacity holds under concurrent puts" do
    cap_room = 8 * 1024 * 1024
    base = settle()
    :ok = Store.set_capacity(base.live_bytes + cap_room)
    parent = self()

    for w <- 1..16 do
      spawn_link(fn ->
        results =
          for _ <- 1..100 do
            case Store.alloc(256 * 1024) do
              {:ok, bin} -> {:ok, bin}
              {:error, :capacity} -> :refused
            end
          end

        send(parent, {:results, w, Enum.count(results, &(&1 == :refused)), length(results)})

        receive do: (:release -> :ok)
      end)
    end

    refused =
      for _ <- 1..16 do
        assert_receive {:results, _w, refused, 100}, 30_000
        refused
      end

    s = Store.stats()
    assert s.live_bytes <= base.live_bytes + cap_room
    assert s.peak_bytes >= s.live_bytes
    # Exactly cap_room / 256 KiB allocations fit; the rest were refused.
    assert 16 * 100 - Enum.sum(refused) == div(cap_room, 256 * 1024)
  end
end
