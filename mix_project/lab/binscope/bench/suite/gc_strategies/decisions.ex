defmodule Binscope.Bench.Suite.GcStrategies.Decisions do
  @moduledoc false
  # The GC strategies suite's verdicts: per traffic shape, the strategy to recommend and the
  # extremes of each figure, and the report (tables, notes, chart) built from the cells.

  # Per shape: the strategy with the least mean binary memory among those within 10% of the best
  # throughput and 2x the best p99 latency; plus the extremes of each figure.
  @doc false
  def decide(cells) do
    for {shape, cmp} <- cells do
      figs =
        for r <- cmp.results do
          c = r.custom

          {r.name, c[:throughput].median, c[:p99_us].median, c[:mean_bytes].median,
           c[:peak_bytes].median}
        end

      best_tp = figs |> Enum.map(&elem(&1, 1)) |> Enum.max()
      best_p99 = figs |> Enum.map(&elem(&1, 2)) |> Enum.min()

      fit =
        Enum.filter(figs, fn {_, tp, p99, _, _} ->
          tp >= 0.9 * best_tp and p99 <= 2 * max(best_p99, 1)
        end)

      fit = if fit == [], do: figs, else: fit
      pick = Enum.min_by(fit, &elem(&1, 3))
      least_mem = Enum.min_by(figs, &elem(&1, 3))
      most_mem = Enum.max_by(figs, &elem(&1, 3))
      fastest = Enum.max_by(figs, &elem(&1, 1))
      slowest = Enum.min_by(figs, &elem(&1, 1))

      %{
        shape: shape,
        recommended: elem(pick, 0),
        least_mean_memory: elem(least_mem, 0),
        most_mean_memory: elem(most_mem, 0),
        fastest: elem(fastest, 0),
        slowest: elem(slowest, 0),
        figures: figs
      }
    end
  end

  @doc false
  def report(cells, decisions, o) do
    rows =
      for {shape, cmp} <- cells, r <- cmp.results do
        c = r.custom

        [
          Atom.to_string(shape),
          r.name,
          round(c[:throughput].median),
          Float.round(c[:p50_us].median / 1, 1),
          Float.round(c[:p99_us].median / 1, 1),
          Binscope.Render.Format.bytes(round(c[:peak_bytes].median)),
          Binscope.Render.Format.bytes(round(c[:mean_bytes].median)),
          Binscope.Render.Format.bytes(round(c[:held_bytes].median)),
          Float.round(c[:reductions_per_msg].median / 1, 1)
        ]
      end

    decision_rows =
      for d <- decisions do
        [
          Atom.to_string(d.shape),
          d.recommended,
          d.least_mean_memory,
          d.most_mean_memory,
          d.fastest,
          d.slowest
        ]
      end

    bursty = Enum.find(cells, fn {s, _} -> s == :bursty end)

    bars =
      case bursty do
        {_, cmp} -> for r <- cmp.results, do: {r.name, r.custom[:mean_bytes].median / 1024 / 1024}
        nil -> []
      end

    shapes =
      for {shape, s} <- o[:shapes] do
        "#{shape}: #{s[:bursts]} burst(s) of #{s[:burst]} packets, #{s[:gap_ms]} ms apart, " <>
          "then #{s[:tail_ms]} ms of silence"
      end

    %{
      title: "GC strategies in a binary router",
      intro:
        "Packets of #{Binscope.Render.Format.bytes(o[:packet_size])} (fresh refc binaries) go " <>
          "producer -> router -> sink (the router forwards a 16-byte copy of the header). " <>
          "`gc every N`: N = #{o[:gc_every]}; `hibernate_after`: #{o[:hibernate_after_ms]} ms. " <>
          "Medians of #{o[:runs]} run(s), strategies interleaved. Binary memory is " <>
          "`:erlang.memory(:binary)` above the pre-run baseline, sampled every ~1 ms. Shapes: " <>
          Enum.join(shapes, "; ") <> ".",
      tables: [
        %{
          title: "figures",
          headers: [
            "shape",
            "strategy",
            "packets/s",
            "p50 latency µs",
            "p99 latency µs",
            "peak binary",
            "mean binary",
            "held after last silence",
            "router reductions/packet"
          ],
          rows: rows
        },
        %{
          title: "decision table",
          headers: [
            "traffic",
            "recommended",
            "least mean memory",
            "most mean memory",
            "fastest",
            "slowest"
          ],
          rows: decision_rows
        }
      ],
      notes: [
        "recommended = least mean binary memory among the strategies within 10% of the best " <>
          "throughput and within 2x the best p99 latency for that traffic shape."
      ],
      chart: %{title: "Mean binary memory, bursty traffic", y_label: "MiB", bars: bars}
    }
  end
end
