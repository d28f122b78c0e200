defmodule Binscope.Bench.Footprint do
  @moduledoc """
  The memory a benchmark session leaves behind: node memory and the store's live bytes before
  the workers start and after they have all exited (`Binscope.Bench.Comparison`'s
  `left_behind`).
  """

  @doc """
  Node memory now, after letting pending store releases land: `:erlang.memory/0` totals
  (`:total`, `:processes`, `:binary`, `:ets`) and the store's live bytes.
  """
  @spec now() :: %{atom() => integer()}
  def now do
    :erlang.garbage_collect()
    settle_store()
    m = :erlang.memory()

    %{
      total: m[:total],
      processes: m[:processes],
      binary: m[:binary],
      ets: m[:ets],
      store_bytes: Binscope.Store.stats().live_bytes
    }
  end

  @doc "What `now/0` grew by since `before` (a `now/0` taken earlier): the memory left behind."
  @spec since(%{atom() => integer()}) :: %{atom() => integer()}
  def since(before), do: Map.new(now(), fn {k, v} -> {k, v - Map.fetch!(before, k)} end)

  # Store releases run in the collecting process's GC right after a holder exits; wait until the
  # live counters are unchanged over three polls (at most ~1 s).
  defp settle_store(last \\ nil, same \\ 0, tries \\ 100)
  defp settle_store(_last, 3, _tries), do: :ok
  defp settle_store(_last, _same, 0), do: :ok

  defp settle_store(last, same, tries) do
    now = Binscope.Store.stats() |> Map.take([:live_count, :live_bytes])

    if now == last do
      Process.sleep(5)
      settle_store(now, same + 1, tries - 1)
    else
      Process.sleep(5)
      settle_store(now, 0, tries - 1)
    end
  end
end
