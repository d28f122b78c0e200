defmodule Binscope.ChartTest do
  use ExUnit.Case, async: true

  alias Binscope.Chart

  @moduletag :tmp_dir

  defp line_spec do
    %{
      title: "Server heap over time",
      x_label: "time (ms)",
      y_label: "memory (KiB)",
      series: [
        %{name: "total heap", points: [{0, 10.5}, {12, 300}, {20, 11}]},
        %{name: "binary refs", points: [{0, 1}, {20, 2.5}]}
      ],
      events: [%{x: 12, label: "manual GC"}, %{x: 19, label: "exit <pid>"}]
    }
  end

  test "line/2 writes an SVG naming every series and event, creating directories", %{tmp_dir: dir} do
    path = Path.join([dir, "a", "b", "line.svg"])
    assert :ok = Chart.line(path, line_spec())
    svg = File.read!(path)
    assert svg =~ "<svg"

    for text <- [
          "Server heap over time",
          "time (ms)",
          "memory (KiB)",
          "total heap",
          "binary refs"
        ] do
      assert svg =~ text
    end

    assert svg =~ "manual GC"
    # Labels are escaped by the SVG backend.
    assert svg =~ "exit &lt;pid&gt;"
    assert :ok = Chart.line!(path, Map.drop(line_spec(), [:events, :x_label, :y_label]))
  end

  test "bars/2 writes labels and values", %{tmp_dir: dir} do
    path = Path.join(dir, "bars.svg")

    assert :ok =
             Chart.bars(path, %{
               title: "Throughput",
               y_label: "msgs/s",
               bars: [{"plain", 1200}, {"hibernate", 300.5}]
             })

    svg = File.read!(path)

    for text <- ["Throughput", "msgs/s", "plain", "hibernate", "1200", "300.5"],
        do: assert(svg =~ text)
  end

  test "runtime errors come back as {:error, reason}", %{tmp_dir: dir} do
    path = Path.join(dir, "x.svg")
    assert {:error, :empty} = Chart.line(path, %{title: "t", series: [%{name: "s", points: []}]})
    assert {:error, :empty} = Chart.bars(path, %{title: "t", bars: []})

    assert {:error, :too_large} =
             Chart.bars(path, %{title: String.duplicate("x", 1001), bars: [{"a", 1}]})

    refute File.exists?(path)

    # A directory where the file should be.
    File.mkdir_p!(Path.join(dir, "taken.svg"))

    assert {:error, {:io, msg}} =
             Chart.bars(Path.join(dir, "taken.svg"), %{title: "t", bars: [{"a", 1}]})

    assert is_binary(msg)

    assert_raise Chart.Error, fn ->
      Chart.bars!(Path.join(dir, "taken.svg"), %{title: "t", bars: [{"a", 1}]})
    end
  end

  test "bad input raises ArgumentError and writes nothing", %{tmp_dir: dir} do
    path = Path.join(dir, "bad.svg")
    good = line_spec()

    bad_lines = [
      Map.delete(good, :title),
      Map.delete(good, :series),
      Map.put(good, :colour, "red"),
      Map.put(good, :title, :atom_title),
      Map.put(good, :title, <<0xFF>>),
      Map.put(good, :series, %{}),
      Map.put(good, :series, [%{name: "s"}]),
      Map.put(good, :series, [%{name: "s", points: [{1, 2}], extra: 1}]),
      Map.put(good, :series, [%{name: "s", points: [{1, "2"}]}]),
      Map.put(good, :series, [%{name: "s", points: [{1, 2, 3}]}]),
      Map.put(good, :series, [%{name: "s", points: [{1, 10 ** 400}]}]),
      Map.put(good, :events, [%{x: "1", label: "e"}]),
      Map.put(good, :events, [%{x: 1, label: ~c"charlist"}]),
      [title: "keyword"]
    ]

    for spec <- bad_lines do
      assert_raise ArgumentError, fn -> Chart.line(path, spec) end
    end

    for p <- [nil, "", ~c"charlist", "a\0b"] do
      assert_raise ArgumentError, fn -> Chart.line(p, good) end
    end

    for spec <- [
          %{title: "t"},
          %{title: "t", bars: [{"a"}]},
          %{title: "t", bars: [{:a, 1}]},
          %{title: "t", bars: [{"a", nil}]}
        ] do
      assert_raise ArgumentError, fn -> Chart.bars(path, spec) end
    end

    refute File.exists?(path)
  end

  test "Lab.OutputDir.dir/0 honours BINSCOPE_REPORT_DIR; path/1 stays inside it" do
    # Not async-safe for other users of the variable; only this test touches it.
    old = System.get_env("BINSCOPE_REPORT_DIR")

    try do
      System.put_env("BINSCOPE_REPORT_DIR", "/tmp/binscope-report-test")
      assert Binscope.Lab.OutputDir.dir() == "/tmp/binscope-report-test"

      assert Binscope.Lab.OutputDir.path("demo/heaps.svg") ==
               "/tmp/binscope-report-test/demo/heaps.svg"

      System.delete_env("BINSCOPE_REPORT_DIR")
      assert Binscope.Lab.OutputDir.dir() == Path.expand("../../../reports", __DIR__)
    after
      if old,
        do: System.put_env("BINSCOPE_REPORT_DIR", old),
        else: System.delete_env("BINSCOPE_REPORT_DIR")
    end

    for bad <- ["", "../x.svg", "/etc/x.svg", "a/../../x"] do
      assert_raise ArgumentError, fn -> Binscope.Lab.OutputDir.path(bad) end
    end
  end
end
