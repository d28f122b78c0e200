defmodule Binscope.Bench.GcTrace do
  @moduledoc """
  The garbage collections of `Binscope.Bench`'s workers, from `gc_*_start`/`gc_*_end` trace
  events (timestamped, so each event lands in its run): per run, what the collections inside
  it reclaimed (added to the heap words and binary bytes allocated) and how many minor and
  major GCs ran. See `Binscope.Bench.Measure` for how a run is timed.
  """

  @doc """
  The calling process's `{heap words (young + old + fragments), binary bytes (virtual binary
  heaps)}` now.
  """
  @spec sizes() :: {integer(), integer()}
  def sizes do
    {:garbage_collection_info, i} = Process.info(self(), :garbage_collection_info)
    gc_sizes(i)
  end

  defp gc_sizes(i) do
    words = i[:heap_size] + i[:old_heap_size] + i[:mbuf_size]
    bin = (i[:bin_vheap_size] + i[:bin_old_vheap_size]) * :erlang.system_info(:wordsize)
    {words, bin}
  end

  @doc """
  The samples of worker `pid` completed with its GC events from `tracer` (`nil`: no tracing):
  what the collections inside each run's window reclaimed is added to its allocation figures,
  and its minor and major GCs counted.
  """
  @spec attach([map()], pid(), pid() | nil) :: [map()]
  def attach(samples, _pid, nil), do: Enum.map(samples, &finish/1)

  def attach(samples, pid, tracer) do
    ref = :erlang.trace_delivered(pid)

    receive do
      {:trace_delivered, ^pid, ^ref} -> :ok
    after
      5_000 -> :ok
    end

    tref = make_ref()
    send(tracer, {:take, pid, self(), tref})

    events =
      receive do
        {^tref, events} -> events
      after
        5_000 -> []
      end

    Enum.map(samples, fn s ->
      {w0, w1} = s.window
      inside = Enum.filter(events, fn {_tag, _info, ts} -> ts >= w0 and ts <= w1 end)
      {rec_words, rec_bin, minors, majors} = reclaimed(inside)

      finish(%{
        s
        | heap_words: s.heap_words + rec_words,
          binary_bytes: s.binary_bytes + rec_bin,
          minor_gcs: minors,
          major_gcs: majors
      })
    end)
  end

  defp finish(s), do: Map.drop(s, [:window, :g0, :g1])

  # What the collections in a run reclaimed: sum of (size at start - size at end) per pair.
  defp reclaimed(events) do
    {acc, _} =
      Enum.reduce(events, {{0, 0, 0, 0}, nil}, fn
        {tag, info, _}, {{w, b, mi, ma}, _} when tag in [:gc_minor_start, :gc_major_start] ->
          mi = if tag == :gc_minor_start, do: mi + 1, else: mi
          ma = if tag == :gc_major_start, do: ma + 1, else: ma
          {{w, b, mi, ma}, gc_sizes(info)}

        {tag, info, _}, {{w, b, mi, ma}, {sw, sb}} when tag in [:gc_minor_end, :gc_major_end] ->
          {ew, eb} = gc_sizes(info)
          {{w + sw - ew, b + sb - eb, mi, ma}, nil}

        _, acc ->
          acc
      end)

    acc
  end

  @doc "Starts the tracer that collects the workers' GC trace events (`attach/3` takes them)."
  @spec start_tracer() :: pid()
  def start_tracer, do: spawn(fn -> tracer_loop(%{}) end)

  defp tracer_loop(acc) do
    receive do
      {:trace_ts, pid, tag, info, ts} ->
        tracer_loop(Map.update(acc, pid, [{tag, info, ts}], &[{tag, info, ts} | &1]))

      {:take, pid, from, ref} ->
        send(from, {ref, acc |> Map.get(pid, []) |> Enum.reverse()})
        tracer_loop(Map.delete(acc, pid))

      _ ->
        tracer_loop(acc)
    end
  end
end
