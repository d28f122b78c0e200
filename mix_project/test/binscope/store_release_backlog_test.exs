defmodule Binscope.StoreReleaseBacklogTest do
  # The VM queues a resource's destructor as aux work of the scheduler that collected its last
  # reference, run when that scheduler next switches processes. A process putting in a tight
  # loop would keep a whole slice of its garbage allocated; the store ends its slice once
  # 512 KiB were made with no store destructor run since (native/binscope_nif/src/release_backlog.rs).
  use Binscope.StoreCase, async: false

  @size 64 * 1024
  @ring 8
  @puts 20_000

  # A steady cycle: a ring of 8 live binaries, each put replacing (and dropping) the oldest,
  # sampling the label's live count (garbage not yet released included) every 97 puts.
  defp in_flight_samples(label) do
    src = :binary.copy(<<1>>, @size)

    cycle = fn
      0, _ring, _cycle, samples ->
        samples

      k, ring, cycle, samples ->
        {_, ring} = :queue.out(ring)

        samples =
          if rem(k, 97) == 0,
            do: [Map.fetch!(Store.by_label(), label).count | samples],
            else: samples

        cycle.(k - 1, :queue.in(Store.put!(src, label: label), ring), cycle, samples)
    end

    ring = :queue.from_list(List.duplicate(<<>>, @ring))
    task = Task.async(fn -> cycle.(@puts, ring, cycle, []) end)

    Enum.sort(Task.await(task, 60_000))
  end

  test "a put loop keeps its released garbage within the backlog bound" do
    samples = in_flight_samples(:release_backlog_test)
    median = Enum.at(samples, div(length(samples), 2))

    # Bound: the ring (8), what the holder drops between two collections (its binary heap
    # starts at 46,422 words, about 6 such binaries), and the backlog (512 KiB, 8 of them), with
    # room to spare. Measured on OTP 25: median 27 with the bound, 118 without (max 44 / 285).
    assert median <= 48, "median in flight #{median}, samples #{inspect(samples)}"
    assert List.last(samples) <= 96, "max in flight #{List.last(samples)}"
  end
end
