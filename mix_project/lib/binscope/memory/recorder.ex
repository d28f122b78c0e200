defmodule Binscope.Memory.Recorder do
  @moduledoc """
  Samples a node's memory breakdown (`Binscope.memory/1`) every `interval` ms, for `duration`
  ms or until stopped, into `<prefix>.csv` (one row per sample, appended as it is taken, so a
  long run keeps what it has) and, at the end, `<prefix>.svg`: a timeline of the categories
  that add up to RSS, drawn as cumulative lines (each line is its category plus every one
  below it, so the gaps between lines are the categories and the top line is RSS).

  Categories, bottom up: `files` (`rss_file` + `rss_shmem`), `native` (`native_resident`),
  `vm_blocks`, `vm_unused_resident`, `unaccounted` (RSS = their sum).

  With `top: n`, each sample also writes the node's `n` largest processes by `top_by:`
  (default `:memory`) to `<prefix>_top.csv` (`time_ms,rank,pid,name,metric,value`), so a
  recording shows who grew, not only what.

  Cost: one `Binscope.memory/1` per sample (counters only; see its docs), plus a line of CSV;
  with `top:`, one `Binscope.top/2` per sample as well (a basic scan of every process: see its
  cost; use an interval of seconds on a large node).
  A sample that fails (node down, timeout) is written as a row with the error and skipped in
  the chart.
  """

  @columns ~w(time_ms rss files native vm_blocks vm_unused_resident unaccounted total vm_carriers)a

  @doc """
  Starts a recorder process; `opts`: `interval:` (ms, default 1000), `duration:` (ms; default
  until `stop/1`), `node:`, `timeout:`, `top:` (processes per sample, default none), `top_by:`.
  Returns `{:ok, pid}`.
  """
  @spec start(Path.t(), keyword()) :: {:ok, pid()}
  def start(prefix, opts \\ []) do
    caller = self()
    {:ok, spawn(fn -> send(caller, {:recorder_done, self(), record(prefix, opts)}) end)}
  end

  @doc "Stops a recorder started by `start/2` and waits for its files: `{:ok, result}`."
  @spec stop(pid(), timeout()) :: {:ok, map()} | {:error, :timeout}
  def stop(pid, timeout \\ 60_000) do
    send(pid, :stop)

    receive do
      {:recorder_done, ^pid, result} -> {:ok, result}
    after
      timeout -> {:error, :timeout}
    end
  end

  @doc """
  Records in the calling process until `duration` ms have passed or a `:stop` message
  arrives. Returns `%{csv: path, svg: path | {:error, reason}, samples: n}`.
  """
  @spec record(Path.t(), keyword()) :: map()
  def record(prefix, opts) do
    interval = Keyword.get(opts, :interval, 1_000)
    duration = Keyword.get(opts, :duration, :infinity)

    unless is_integer(interval) and interval > 0,
      do: raise(ArgumentError, "interval: must be a positive integer (ms)")

    unless duration == :infinity or (is_integer(duration) and duration > 0),
      do: raise(ArgumentError, "duration: must be a positive integer (ms) or :infinity")

    mem_opts = Keyword.take(opts, [:node, :timeout])
    csv = prefix <> ".csv"
    File.mkdir_p!(Path.dirname(csv))
    File.write!(csv, [Enum.join(@columns, ","), ",error\n"])
    top = top_spec(prefix, opts, mem_opts)
    start = System.monotonic_time(:millisecond)
    samples = loop({csv, top}, mem_opts, interval, duration, start, [])

    %{
      csv: csv,
      top_csv: top && top.path,
      svg: chart(prefix <> ".svg", Enum.reverse(samples)),
      samples: length(samples)
    }
  end

  defp top_spec(prefix, opts, mem_opts) do
    case Keyword.get(opts, :top) do
      nil ->
        nil

      n when is_integer(n) and n > 0 and n <= 1000 ->
        by = Keyword.get(opts, :top_by, :memory)
        path = prefix <> "_top.csv"
        File.write!(path, "time_ms,rank,pid,name,metric,value\n")
        %{path: path, n: n, opts: [by: by, detail: :basic] ++ mem_opts, by: by}

      other ->
        raise ArgumentError,
              "top: must be an integer in 1..1000, got: #{inspect(other, limit: 8)}"
    end
  end

  defp write_top(nil, _t), do: :ok

  defp write_top(top, t) do
    case Binscope.top(top.n, top.opts) do
      {:ok, rows} ->
        lines =
          rows
          |> Enum.with_index(1)
          |> Enum.map(fn {r, i} ->
            # Basic records (the scan here) name a process by these two.
            name = r.registered_name || r.label || ""
            cell = name |> inspect() |> String.replace(~r/[,\n"]/, " ")

            [
              to_string(t),
              ",",
              to_string(i),
              ",",
              inspect(r.pid),
              ",",
              cell,
              ",",
              to_string(top.by),
              ",",
              to_string(Map.get(r, top.by) || ""),
              "\n"
            ]
          end)

        File.write!(top.path, lines, [:append])

      _error ->
        :ok
    end
  end

  defp loop({csv, top} = out, mem_opts, interval, duration, start, acc) do
    t = System.monotonic_time(:millisecond) - start
    write_top(top, t)

    acc =
      case Binscope.memory(mem_opts) do
        {:ok, %{unaccounted: u} = m} when is_integer(u) ->
          row = sample(t, m)
          File.write!(csv, [Enum.map_join(@columns, ",", &row[&1]), ",\n"], [:append])
          [row | acc]

        other ->
          err = other |> inspect() |> String.replace(~r/[,\n]/, " ")

          File.write!(
            csv,
            [to_string(t), String.duplicate(",", length(@columns) - 1), ",", err, "\n"],
            [:append]
          )

          acc
      end

    next = interval - rem(System.monotonic_time(:millisecond) - start, interval)

    cond do
      duration != :infinity and t + next > duration ->
        acc

      true ->
        receive do
          :stop -> acc
        after
          next -> loop(out, mem_opts, interval, duration, start, acc)
        end
    end
  end

  defp sample(t, m) do
    %{
      time_ms: t,
      rss: m.rss,
      files: m.rss_file + m.rss_shmem,
      native: m.native_resident,
      vm_blocks: m.vm_blocks,
      vm_unused_resident: m.vm_unused_resident,
      unaccounted: m.unaccounted,
      total: m.total,
      vm_carriers: m.vm_carriers
    }
  end

  @stack [:files, :native, :vm_blocks, :vm_unused_resident, :unaccounted]

  defp chart(_path, []), do: {:error, :empty}

  defp chart(path, samples) do
    {series, _} =
      Enum.map_reduce(@stack, Enum.map(samples, fn _ -> 0 end), fn k, below ->
        sums = Enum.zip_with(samples, below, fn s, b -> b + s[k] end)
        points = Enum.zip_with(samples, sums, fn s, y -> {s.time_ms / 1000, y / 1_048_576} end)
        {%{name: "+ #{k}", points: points}, sums}
      end)

    case Binscope.Memory.Timeline.write(path, %{
           title: "Memory by category, cumulative (top line = RSS)",
           x_label: "time (s)",
           y_label: "MiB",
           series: series
         }) do
      :ok -> path
      error -> error
    end
  end
end
