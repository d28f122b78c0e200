defmodule Binscope.Memory.Growth do
  @moduledoc """
  Growth over a window: which processes grew, not which are large. A leak is growth; a
  snapshot cannot tell a leak from a cache.

  `top/3` takes two snapshots of the node, `window` ms apart, and ranks processes by how much
  a metric grew between them (as recon's `proc_window`): a process that did not exist at the
  start grew from 0; one that exited is left out.

  Cost: two snapshots (`Binscope.processes/1`'s cost, twice) and the wait. Between them only
  `{pid, value}` of the first is kept. The call is bounded by `timeout:` plus the window.
  """

  alias Binscope.Accounting

  @doc """
  The `n` processes of `node` whose `by` metric grew most over `window` ms, each record of the
  second snapshot with `growth` (bytes or units of the metric, may be negative), `growth_from`
  (the value at the start, `nil` for a process born in the window) and `window_ms`.
  """
  @spec top(node(), pos_integer(), map()) :: {:ok, [map()]} | {:error, term()}
  def top(node, n, %{window: window} = o) do
    # `o`: the options of Binscope.top/2, validated (`by:` filled in).
    by = o.by

    with {:ok, s1} <- Accounting.snapshot(node, o) do
      before = Map.new(s1.processes, &{&1.pid, Map.fetch!(&1, by)})
      Process.sleep(window)

      with {:ok, s2} <- Accounting.snapshot(node, o) do
        me = self()
        records = Enum.reject(s2.processes, &Accounting.own_scan?(&1, me))
        {:ok, rank(before, records, by, window, n)}
      end
    end
  end

  @doc """
  Ranks `records` by growth of `by` since `before` (`%{pid => value}`), largest first (equal
  ones the larger pid first). A figure unknown at either end (`nil`) makes the growth unknown:
  `nil`, ranked last. Only the first `n` get the growth fields (at a million processes no map
  is made per process, and no sort of them all).
  """
  @spec rank(%{pid() => number() | nil}, [map()], atom(), non_neg_integer(), pos_integer()) ::
          [map()]
  def rank(before, records, by, window, n) do
    records
    |> Accounting.top(n, &growth(before, by, &1))
    |> Enum.map(fn r ->
      Map.merge(r, %{
        growth: growth(before, by, r),
        growth_from: Map.get(before, r.pid),
        window_ms: window
      })
    end)
  end

  # A process born in the window grew from 0.
  defp growth(before, by, r) do
    case {Map.fetch(before, r.pid), Map.fetch!(r, by)} do
      {_, nil} -> nil
      {{:ok, nil}, _now} -> nil
      {{:ok, from}, now} -> now - from
      {:error, now} -> now
    end
  end
end
