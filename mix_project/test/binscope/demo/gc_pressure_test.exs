defmodule Binscope.Demo.GcPressureTest do
  use Binscope.StoreCase, async: false

  alias Binscope.Demo.GcPressure
  alias Binscope.Store

  @moduletag :tmp_dir
  @frames 400
  @size 256 * 1024

  test "the remedy is on where the VM needs it, and verified" do
    status = Store.GcPressure.status()
    otp = String.to_integer(status.otp_release)
    # OTP 25/26 charge resource binaries natively; 27+ need (and get) the patch.
    expected = if otp >= 27, do: :patched, else: :native
    assert status.mode == expected, inspect(status)
    assert Store.GcPressure.charged?()

    # A store binary lists, and is referenced, at its real size where the patch is on.
    {:ok, bin} = Store.put(:binary.copy(<<1>>, 100_000), label: :gc_pressure_test)

    if expected == :patched do
      assert :binary.referenced_byte_size(bin) == 100_000
      {:binary, listed} = :erlang.process_info(self(), :binary)
      assert Enum.any?(listed, fn {_, size, _} -> size == 100_000 end)
    end
  end

  test "a server that keeps only the latest frame keeps about what VM binaries would",
       %{tmp_dir: dir} do
    r = GcPressure.run(frames: @frames, size: @size, hold_ms: 500, quiet: true, report_dir: dir)
    burst = @frames * @size
    store = r.runs.store

    # The server's binary virtual heap limit adapts to what survives its collections (frames
    # still in its mailbox count as live), so how many dead frames wait for the next collection
    # depends on scheduling: in 25 runs on OTP 27 the VM-binary run kept 2-9 frames (peak 7-11)
    # and the store run 2-7 (peak 4-8). The bound is 16 frames, 4% of the burst; without the
    # remedy the server keeps all of it (checked below).
    bound = 16 * @size
    assert store.peak <= bound, inspect(r.runs)
    assert store.kept <= bound, inspect(r.runs)
    assert store.server_minor_gcs > 0

    if r.mode == :patched do
      # Without the remedy the server never collects: the whole burst stays alive. This is the
      # problem the remedy fixes, measured in the same run.
      off = r.runs.unpatched
      assert off.kept >= 0.9 * burst, inspect(r.runs)
      assert Store.GcPressure.status().mode == :patched
    end

    assert File.read!(r.chart) =~ "Frames alive"
  end
end
