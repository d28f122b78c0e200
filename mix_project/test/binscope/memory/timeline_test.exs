defmodule Binscope.Memory.TimelineTest do
  use ExUnit.Case, async: true

  alias Binscope.Memory.Timeline

  test "renders every series, escapes text, refuses an empty chart" do
    spec = %{
      title: "a <b> & c",
      x_label: "time (s)",
      y_label: "MiB",
      series: [%{name: "rss", points: [{0, 1}, {1, 3}]}, %{name: "vm", points: [{0, 0.5}]}]
    }

    {:ok, svg} = Timeline.render(spec)
    svg = IO.iodata_to_binary(svg)
    assert svg =~ "a &lt;b&gt; &amp; c"
    assert length(String.split(svg, "<polyline")) == 3
    assert svg =~ ">rss</text>" and svg =~ ">vm</text>"
    assert Timeline.render(%{spec | series: [%{name: "x", points: []}]}) == {:error, :empty}
  end
end
