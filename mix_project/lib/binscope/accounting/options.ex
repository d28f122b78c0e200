defmodule Binscope.Accounting.Options do
  # Validation of the options of Binscope.memory/processes/top/leaks. Every bad value raises
  # ArgumentError naming the function and the value; nothing creates an atom from user input.
  @moduledoc false

  alias Binscope.Store.Options, as: Common

  @default_timeout 30_000
  @metrics [
    :memory,
    :heap_size,
    :total_heap_size,
    :stack_size,
    :old_heap_size,
    :message_queue_len,
    :reductions,
    :binary_refs,
    :binary_bytes,
    :binary_uss,
    :binary_pss,
    :native_bytes,
    :native_store_bytes,
    :minor_gcs,
    :bin_vheap_size,
    :bin_old_vheap_size
  ]
  @modes [:targeted, :full, :dry_run]
  # What `detail: :basic` collects (the others are nil there).
  @basic_metrics [
    :memory,
    :binary_refs,
    :binary_bytes,
    :binary_uss,
    :binary_pss,
    :native_bytes,
    :native_store_bytes
  ]

  @doc false
  def metrics, do: @metrics
  @doc false
  def modes, do: @modes
  @doc false
  def basic_metrics, do: @basic_metrics

  @doc "Validates `opts` for `fun`, allowing the target options plus `extra` keys."
  def validate!(opts, extra, fun) do
    map = Common.keyword!(opts, [:node, :nodes, :timeout | extra], fun)

    if Map.has_key?(map, :node) and Map.has_key?(map, :nodes) do
      raise ArgumentError, "#{fun}: give either :node or :nodes, not both"
    end

    o =
      Map.new(map, fn {k, v} -> {k, value!(k, v, fun)} end)
      |> Map.put_new(:timeout, @default_timeout)

    if Map.get(o, :detail) == :basic and Map.get(o, :by, :memory) not in @basic_metrics do
      raise ArgumentError,
            "#{fun}: with detail: :basic, :by must be one of #{inspect(@basic_metrics)}"
    end

    o
  end

  defp value!(:node, n, _fun) when is_atom(n) and n not in [nil, true, false], do: n
  defp value!(:nodes, :connected, _fun), do: :connected

  defp value!(:nodes, ns, fun) when is_list(ns) do
    if ns != [] and Enum.all?(ns, &(is_atom(&1) and &1 not in [nil, true, false])) do
      ns
    else
      bad(:nodes, ns, fun, "a non-empty list of node names or :connected")
    end
  end

  defp value!(:timeout, t, _fun) when is_integer(t) and t > 0 and t <= 3_600_000, do: t
  defp value!(:limit, l, _fun) when is_integer(l) and l > 0 and l <= 1_000_000, do: l
  defp value!(:candidates, c, _fun) when is_integer(c) and c > 0 and c <= 10_000_000, do: c
  defp value!(:by, m, _fun) when m in @metrics, do: m
  defp value!(:mode, m, _fun) when m in @modes, do: m

  defp value!(:pids, ps, fun) when is_list(ps) do
    # Each pid once: a pid given twice would be two holders of its own binaries (USS 0, PSS
    # split between the copies).
    if Enum.all?(ps, &is_pid/1), do: Enum.uniq(ps), else: bad(:pids, ps, fun, "a list of pids")
  end

  defp value!(:detail, d, _fun) when d in [:full, :basic], do: d
  defp value!(:idle_ms, t, _fun) when is_integer(t) and t >= 0 and t <= 60_000, do: t
  defp value!(:workers, :auto, _fun), do: :auto
  defp value!(:workers, k, _fun) when is_integer(k) and k > 0 and k <= 1024, do: k
  defp value!(:top_shared, n, _fun) when is_integer(n) and n >= 0 and n <= 10_000, do: n
  defp value!(:window, w, _fun) when is_integer(w) and w > 0 and w <= 3_600_000, do: w
  defp value!(:read_tables, r, _fun) when is_boolean(r), do: r
  defp value!(:max_objects, m, _fun) when is_integer(m) and m > 0 and m <= 100_000_000, do: m

  defp value!(key, v, fun) do
    expected =
      case key do
        :node -> "a node name (atom)"
        :nodes -> "a list of node names or :connected"
        :timeout -> "a timeout in ms (1..3_600_000)"
        :limit -> "an integer in 1..1_000_000"
        :candidates -> "an integer in 1..10_000_000"
        :by -> "one of #{inspect(@metrics)}"
        :mode -> "one of #{inspect(@modes)}"
        :top_shared -> "an integer in 0..10_000"
        :detail -> ":full or :basic"
        :workers -> ":auto or an integer in 1..1024"
        :idle_ms -> "an integer in 0..60_000 (ms)"
        :window -> "a window in ms (1..3_600_000)"
        :read_tables -> "a boolean"
        :max_objects -> "an integer in 1..100_000_000"
        _ -> "a valid value"
      end

    bad(key, v, fun, expected)
  end

  defp bad(key, v, fun, expected) do
    raise ArgumentError, "#{fun}: #{inspect(key)} must be #{expected}, got: #{Common.short(v)}"
  end
end
