defmodule Binscope.Memory.RecorderTest do
  use ExUnit.Case, async: false

  @moduletag :tmp_dir

  test "samples every interval into CSV rows that add up to RSS, and a timeline SVG", %{
    tmp_dir: d
  } do
    prefix = Path.join(d, "run")
    grower = spawn(fn -> grow([]) end)
    r = Binscope.Memory.Recorder.record(prefix, interval: 200, duration: 1_200)
    Process.exit(grower, :kill)

    # One sample per interval at most (a loaded machine may take fewer).
    assert r.samples >= 2 and r.samples <= 7

    [header | rows] =
      prefix |> Kernel.<>(".csv") |> File.read!() |> String.split("\n", trim: true)

    assert header =~ "time_ms,rss,files,native,vm_blocks,vm_unused_resident,unaccounted"
    assert length(rows) == r.samples
    times = Enum.map(rows, &(&1 |> String.split(",") |> hd() |> String.to_integer()))
    assert Enum.all?(Enum.zip(times, tl(times)), fn {a, b} -> b - a >= 150 end)

    for row <- rows do
      [t, rss, files, native, blocks, unused, unacc | _] = String.split(row, ",")
      assert String.to_integer(t) >= 0

      assert String.to_integer(rss) ==
               Enum.sum(Enum.map([files, native, blocks, unused, unacc], &String.to_integer/1))
    end

    assert r.svg == prefix <> ".svg"
    svg = File.read!(r.svg)
    assert svg =~ "<svg" and svg =~ "vm_blocks" and svg =~ "unaccounted"
  end

  test "start/stop: runs until stopped", %{tmp_dir: d} do
    prefix = Path.join(d, "bg")
    {:ok, pid} = Binscope.Memory.Recorder.start(prefix, interval: 100)
    wait_rows(prefix <> ".csv", 3)
    assert {:ok, %{samples: n, csv: csv}} = Binscope.Memory.Recorder.stop(pid)
    assert n >= 3
    assert length(String.split(File.read!(csv), "\n", trim: true)) == n + 1
    assert_raise ArgumentError, fn -> Binscope.Memory.Recorder.record("x", interval: 0) end
  end

  defp wait_rows(csv, n) do
    rows =
      if File.exists?(csv),
        do: length(String.split(File.read!(csv), "\n", trim: true)) - 1,
        else: 0

    if rows < n do
      Process.sleep(50)
      wait_rows(csv, n)
    end
  end

  defp grow(acc) do
    Process.sleep(100)
    grow([:binary.copy(<<1>>, 1_048_576) | acc])
  end

  test "top: writes the largest processes of each sample; the grower is first", %{tmp_dir: d} do
    prefix = Path.join(d, "top")
    me = self()

    big =
      spawn(fn ->
        bin = :binary.copy(<<3>>, 64 * 1_048_576)
        send(me, :ready)

        receive do
          :stop -> byte_size(bin)
        end
      end)

    assert_receive :ready, 5_000
    Process.register(big, :recorder_top_holder)

    r =
      Binscope.Memory.Recorder.record(prefix,
        interval: 200,
        duration: 600,
        top: 3,
        top_by: :binary_pss
      )

    send(big, :stop)
    assert r.top_csv == prefix <> "_top.csv"
    [header | rows] = r.top_csv |> File.read!() |> String.split("\n", trim: true)
    assert header == "time_ms,rank,pid,name,metric,value"
    assert length(rows) == 3 * r.samples

    firsts =
      for row <- rows, cells = String.split(row, ","), match?([_, "1" | _], cells), do: cells

    assert length(firsts) == r.samples

    for [_t, "1", _pid, name, "binary_pss", value] <- firsts do
      assert name =~ "recorder_top_holder"
      assert String.to_integer(value) >= 64 * 1_048_576
    end

    assert_raise ArgumentError, ~r/top: must be/, fn ->
      Binscope.Memory.Recorder.record(prefix, duration: 10, top: 0)
    end
  end
end
