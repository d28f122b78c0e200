defmodule Binscope.Chart do
  @moduledoc """
  SVG charts drawn by the Rust `plotters` crate (native/binscope_chart), for the demos and the
  benchmarks.

      Binscope.Chart.line("reports/heap.svg", %{
        title: "Server heap over time",
        x_label: "time (ms)",
        y_label: "memory (KiB)",
        series: [%{name: "total heap", points: [{0, 10.5}, {12, 300}, {20, 11}]}],
        events: [%{x: 12, label: "manual GC"}]
      })
      #=> :ok

      Binscope.Chart.bars("reports/throughput.svg", %{
        title: "Throughput", y_label: "messages/s", bars: [{"plain", 1.2e6}, {"hibernate", 3.1e5}]
      })
      #=> :ok

  Both write an SVG file (creating missing parent directories) and return `:ok`, or
  `{:error, reason}` when nothing could be drawn or written:

    * `:empty` - no point in any series, or no bar;
    * `:too_large` - over the limits (64 series, 1,000,000 points, 10,000 events or bars,
      1,000 bytes of text per label);
    * `{:io, message}` - the file could not be written;
    * `{:draw, message}` - the plotting library refused the chart.

  A spec of the wrong shape (missing `:title`, unknown keys, a point that is not a pair of
  numbers, a label that is not a UTF-8 string) raises `ArgumentError`. Drawing runs on a dirty
  CPU scheduler.
  """

  alias Binscope.Lab.Native

  @typedoc "A point: x and y, any numbers."
  @type point :: {number(), number()}

  @typedoc "A line chart: named series of points and labelled vertical event markers."
  @type line_spec :: %{
          required(:title) => String.t(),
          optional(:x_label) => String.t(),
          optional(:y_label) => String.t(),
          required(:series) => [%{name: String.t(), points: [point()]}],
          optional(:events) => [%{x: number(), label: String.t()}]
        }

  @typedoc "A bar chart: one bar per `{label, value}`."
  @type bars_spec :: %{
          required(:title) => String.t(),
          optional(:y_label) => String.t(),
          required(:bars) => [{String.t(), number()}]
        }

  @typedoc "Why a chart was not written."
  @type reason :: :empty | :too_large | {:io, String.t()} | {:draw, String.t()}

  defmodule Error do
    @moduledoc "Raised by `Binscope.Chart.line!/2` and `bars!/2`; `reason` as in `{:error, reason}`."
    defexception [:reason, :message]

    @impl true
    def exception(reason) do
      %__MODULE__{reason: reason, message: "chart not written: #{inspect(reason)}"}
    end
  end

  @line_keys [:title, :x_label, :y_label, :series, :events]
  @bars_keys [:title, :y_label, :bars]

  @doc "Draws a line chart into the SVG file at `path`. See the module doc."
  @spec line(Path.t(), line_spec()) :: :ok | {:error, reason()}
  def line(path, spec) do
    path = path!(path)
    spec = spec!(spec, @line_keys, [:title, :series])

    series =
      spec
      |> Map.fetch!(:series)
      |> list!(:series)
      |> Enum.map(fn
        %{name: name, points: points} = s when map_size(s) == 2 ->
          {text!(name, :name), points |> list!(:points) |> Enum.map(&point!/1)}

        other ->
          bad!("each series must be %{name: string, points: [{x, y}]}", other)
      end)

    events =
      spec
      |> Map.get(:events, [])
      |> list!(:events)
      |> Enum.map(fn
        %{x: x, label: label} = e when map_size(e) == 2 -> {number!(x), text!(label, :label)}
        other -> bad!("each event must be %{x: number, label: string}", other)
      end)

    Native.chart_line(
      path,
      text!(spec.title, :title),
      text!(Map.get(spec, :x_label, ""), :x_label),
      text!(Map.get(spec, :y_label, ""), :y_label),
      series,
      events
    )
  end

  @doc "Like `line/2`, but raises `Binscope.Chart.Error` when the chart was not written."
  @spec line!(Path.t(), line_spec()) :: :ok
  def line!(path, spec), do: bang(line(path, spec))

  @doc "Draws a bar chart into the SVG file at `path`. See the module doc."
  @spec bars(Path.t(), bars_spec()) :: :ok | {:error, reason()}
  def bars(path, spec) do
    path = path!(path)
    spec = spec!(spec, @bars_keys, [:title, :bars])

    bars =
      spec
      |> Map.fetch!(:bars)
      |> list!(:bars)
      |> Enum.map(fn
        {label, value} -> {text!(label, :label), number!(value)}
        other -> bad!("each bar must be {label_string, number}", other)
      end)

    Native.chart_bars(
      path,
      text!(spec.title, :title),
      text!(Map.get(spec, :y_label, ""), :y_label),
      bars
    )
  end

  @doc "Like `bars/2`, but raises `Binscope.Chart.Error` when the chart was not written."
  @spec bars!(Path.t(), bars_spec()) :: :ok
  def bars!(path, spec), do: bang(bars(path, spec))

  defp bang(:ok), do: :ok
  defp bang({:error, reason}), do: raise(Error, reason)

  defp path!(path) when is_binary(path) and path != "" do
    if String.valid?(path) and not String.contains?(path, <<0>>) do
      path
    else
      bad!("path must be a UTF-8 string without NUL bytes", path)
    end
  end

  defp path!(path), do: bad!("path must be a non-empty string", path)

  defp spec!(spec, allowed, required) when is_map(spec) do
    case Map.keys(spec) -- allowed do
      [] ->
        :ok

      unknown ->
        bad!("unknown chart keys #{inspect(unknown)}; allowed: #{inspect(allowed)}", spec)
    end

    case required -- Map.keys(spec) do
      [] -> spec
      missing -> bad!("missing chart keys #{inspect(missing)}", spec)
    end
  end

  defp spec!(spec, _allowed, _required), do: bad!("a chart spec must be a map", spec)

  defp list!(list, _what) when is_list(list), do: list
  defp list!(other, what), do: bad!("#{what} must be a list", other)

  defp point!({x, y}), do: {number!(x), number!(y)}
  defp point!(other), do: bad!("a point must be {x, y} with numbers", other)

  # Integers beyond the float range raise ArgumentError from :erlang.float/1 as well.
  defp number!(n) when is_number(n) do
    :erlang.float(n)
  rescue
    ArgumentError -> bad!("number out of float range", n)
  end

  defp number!(other), do: bad!("expected a number", other)

  defp text!(text, what) when is_binary(text) do
    if String.valid?(text), do: text, else: bad!("#{what} must be valid UTF-8", text)
  end

  defp text!(other, what), do: bad!("#{what} must be a string", other)

  defp bad!(message, value) do
    raise ArgumentError, "Binscope.Chart: #{message}, got: #{inspect(value, limit: 5)}"
  end
end
