defmodule Binscope.Memory.Ets do
  @moduledoc """
  The largest ETS tables of a node, through the OTP-only collector.

  Cost: one `:ets.info(t, :memory)` per table (a counter read, no table is scanned), then four
  `:ets.info/2` for each of the `limit` largest and one `process_info/2` of each owner. Measured
  on OTP 25: 0.4 µs per table with 100 tables, 0.7 µs with 10,000 (7 ms for the call, in
  ordinary preemptible Erlang code on the target).
  """

  alias Binscope.Remote

  @typedoc "One table; `memory` in bytes (the table's own words, not the refc binaries it holds)."
  @type table :: %{
          table: :ets.tid() | atom(),
          name: atom(),
          owner: pid(),
          owner_name: atom() | nil,
          type: atom(),
          size: non_neg_integer(),
          memory: non_neg_integer()
        }

  @doc "The `limit` largest tables of `node` by memory, largest first."
  @spec top(node(), pos_integer(), Remote.deadline()) :: {:ok, [table()]} | {:error, term()}
  def top(node, limit, deadline) do
    with {:ok, rows} <- Remote.call(node, :ets_tables, [limit], deadline) do
      {:ok,
       Enum.map(rows, fn {t, name, owner, owner_name, type, size, mem} ->
         %{
           table: t,
           name: name,
           owner: owner,
           owner_name: if(owner_name == :undefined, do: nil, else: owner_name),
           type: type,
           size: size,
           memory: mem
         }
       end)}
    end
  end
end
