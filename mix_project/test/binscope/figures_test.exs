defmodule Binscope.FiguresTest do
  use Binscope.StoreCase, async: false

  # A process holding two references to one interned store entry of 100 KB (and nothing else).
  defp twice_interned do
    parent = self()

    pid =
      spawn(fn ->
        data = :binary.copy(<<1>>, 100_000)
        {:ok, a} = Binscope.Store.intern(data)
        {:ok, b} = Binscope.Store.intern(:binary.copy(data))
        send(parent, :interned)

        receive do
          :stop -> {a, b}
        end
      end)

    assert_receive :interned
    # Drop the copies it was made from: only the two store references stay.
    :erlang.garbage_collect(pid)
    pid
  end

  # Records once store binaries were resolved to their entries. The node's address calibration
  # sometimes fails its self-check (the snapshot then says so in store_resolution, and store
  # binaries count as VM binaries): try again, a few times.
  defp resolved(opts, tries \\ 20) do
    {:ok, snap} = Binscope.snapshot(opts)

    cond do
      snap.store_resolution == :ok -> snap.processes
      tries > 1 -> resolved(opts, tries - 1)
      true -> flunk("store binaries never resolved: #{inspect(snap.store_resolution)}")
    end
  end

  test "an entry interned twice counts once in native_bytes" do
    pid = twice_interned()
    [r] = resolved(pids: [pid])
    assert r.binary_refs == 2 and r.binary_distinct == 1
    assert r.native_store_bytes == 100_000

    if String.to_integer(to_string(:erlang.system_info(:otp_release))) < 27 do
      # The virtual binary heap counts each reference at 100 KB: the estimate of other native
      # bytes must take both away.
      assert r.native_estimated_bytes == 0
      assert r.native_bytes == 100_000
    else
      assert r.native_estimated_bytes == nil
    end

    Process.exit(pid, :kill)
  end

  test "a pid given twice is one record, with its own USS and PSS" do
    pid = twice_interned()
    [once] = resolved(pids: [pid])
    [twice] = resolved(pids: [pid, pid])
    assert twice.binary_uss == once.binary_uss and twice.binary_pss == once.binary_pss
    assert twice.binary_pss == 100_000, inspect({once, twice})
    {:ok, snap} = Binscope.snapshot(pids: [pid, self(), pid])
    assert length(snap.processes) == 2
    Process.exit(pid, :kill)
  end
end
