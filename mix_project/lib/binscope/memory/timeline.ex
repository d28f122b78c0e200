defmodule Binscope.Memory.Timeline do
  @moduledoc """
  A memory timeline as a small self-contained SVG: one line per series, over time, with a legend.

  Written in plain Elixir so the recorder (`Binscope.Memory.Recorder`) needs nothing beyond the
  library: the lab's plotters charts (`Binscope.Chart`) are not part of an app's release.
  """

  @width 900
  @height 420
  @margin %{left: 70, right: 20, top: 40, bottom: 50}
  @colors ~w(#1f77b4 #ff7f0e #2ca02c #d62728 #9467bd #8c564b #e377c2 #7f7f7f)

  @typedoc "A series: a name and `{x, y}` points (numbers)."
  @type series :: %{name: String.t(), points: [{number(), number()}]}

  @doc """
  Writes the chart to `path` (creating its directory): `:ok` or `{:error, reason}`.

  `spec`: `title`, `x_label`, `y_label` (strings) and `series` (at least one point in all).
  """
  @spec write(Path.t(), map()) :: :ok | {:error, term()}
  def write(path, spec) do
    with {:ok, svg} <- render(spec),
         :ok <- File.mkdir_p(Path.dirname(path)) do
      File.write(path, svg)
    end
  end

  @doc "The SVG text of `spec` (see `write/2`)."
  @spec render(map()) :: {:ok, iodata()} | {:error, :empty}
  def render(%{series: series} = spec) do
    points = Enum.flat_map(series, & &1.points)

    if points == [] do
      {:error, :empty}
    else
      {:ok, svg(spec, points)}
    end
  end

  defp svg(spec, points) do
    {xs, ys} = Enum.unzip(points)
    {x0, x1} = range(Enum.min(xs), Enum.max(xs))
    {y0, y1} = range(min(Enum.min(ys), 0), Enum.max(ys))
    pw = @width - @margin.left - @margin.right
    ph = @height - @margin.top - @margin.bottom
    sx = fn x -> @margin.left + (x - x0) / (x1 - x0) * pw end
    sy = fn y -> @margin.top + ph - (y - y0) / (y1 - y0) * ph end

    lines =
      spec.series
      |> Enum.with_index()
      |> Enum.map(fn {s, i} ->
        color = Enum.at(@colors, rem(i, length(@colors)))
        pts = Enum.map_join(s.points, " ", fn {x, y} -> "#{f(sx.(x))},#{f(sy.(y))}" end)
        legend_y = @margin.top + 14 + 16 * i

        [
          ~s(<polyline fill="none" stroke="#{color}" stroke-width="1.5" points="#{pts}"/>\n),
          ~s(<line x1="#{@width - 230}" y1="#{legend_y - 4}" x2="#{@width - 210}" y2="#{legend_y - 4}" stroke="#{color}" stroke-width="2"/>),
          ~s(<text x="#{@width - 204}" y="#{legend_y}" font-size="12">#{esc(s.name)}</text>\n)
        ]
      end)

    ticks =
      for k <- 0..4 do
        y = y0 + (y1 - y0) * k / 4
        x = x0 + (x1 - x0) * k / 4

        [
          ~s(<line x1="#{@margin.left}" y1="#{f(sy.(y))}" x2="#{@width - @margin.right}" y2="#{f(sy.(y))}" stroke="#ddd"/>),
          ~s(<text x="#{@margin.left - 6}" y="#{f(sy.(y) + 4)}" font-size="11" text-anchor="end">#{num(y)}</text>),
          ~s(<text x="#{f(sx.(x))}" y="#{@height - @margin.bottom + 16}" font-size="11" text-anchor="middle">#{num(x)}</text>\n)
        ]
      end

    [
      ~s(<svg xmlns="http://www.w3.org/2000/svg" width="#{@width}" height="#{@height}" font-family="sans-serif">\n),
      ~s(<rect width="100%" height="100%" fill="white"/>\n),
      ~s(<text x="#{div(@width, 2)}" y="24" font-size="16" text-anchor="middle">#{esc(spec.title)}</text>\n),
      ticks,
      ~s(<rect x="#{@margin.left}" y="#{@margin.top}" width="#{pw}" height="#{ph}" fill="none" stroke="#333"/>\n),
      # The legend sits on a white box in the top right corner, over the lines.
      Enum.map(lines, &Enum.at(&1, 0)),
      ~s(<rect x="#{@width - 236}" y="#{@margin.top + 2}" width="#{236 - @margin.right - 2}" height="#{16 * length(spec.series) + 6}" fill="white" fill-opacity="0.9" stroke="#999"/>\n),
      Enum.map(lines, &legend/1),
      ~s(<text x="#{div(@width, 2)}" y="#{@height - 12}" font-size="12" text-anchor="middle">#{esc(spec.x_label)}</text>\n),
      ~s[<text x="16" y="#{div(@height, 2)}" font-size="12" text-anchor="middle" transform="rotate(-90 16 #{div(@height, 2)})">#{esc(spec.y_label)}</text>\n],
      "</svg>\n"
    ]
  end

  defp legend([_line | legend]), do: legend

  defp range(a, b) when a == b, do: {a - 1, b + 1}
  defp range(a, b), do: {a, b}

  defp f(v), do: :erlang.float_to_binary(v / 1, decimals: 1)

  defp num(v) when abs(v) >= 100, do: Integer.to_string(round(v))
  defp num(v), do: :erlang.float_to_binary(v / 1, decimals: 1)

  defp esc(text) do
    text
    |> to_string()
    |> String.replace("&", "&amp;")
    |> String.replace("<", "&lt;")
    |> String.replace(">", "&gt;")
  end
end
