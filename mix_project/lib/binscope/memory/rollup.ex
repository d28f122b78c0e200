defmodule Binscope.Memory.Rollup do
  @moduledoc """
  Memory rolled up by application (each process's group leader, as
  `:application.get_application/1` decides), by registered name, by initial call or by process
  label (`proc_lib:set_label/1`, OTP 27+; every process is unlabelled, `nil`, on older OTP).

  Cost: one snapshot (`Binscope.processes/1`'s cost: basic detail for `:application` and
  `:registered_name` and `:label`, full detail for `:initial_call`), plus for `:application` one
  `process_info(pid, :group_leader)` per process on the target.
  """

  alias Binscope.{Accounting, Remote}

  @keys [:application, :registered_name, :initial_call, :label]

  @doc false
  def keys, do: @keys

  @doc """
  Groups of `node`'s processes by `key`, largest first (`memory` + `binary_pss` +
  `native_store_bytes`): `%{group, processes, memory, binary_pss, native_store_bytes, total}`.
  Store bytes are exact on every OTP (other NIFs' native bytes are unknown on OTP 27+, so they
  are not summed). Processes outside any application are grouped under `nil`; so are
  unregistered ones for `:registered_name` and unlabelled ones for `:label`.
  """
  @spec by(node(), atom(), map()) :: {:ok, [map()]} | {:error, term()}
  def by(node, key, o) when key in @keys do
    detail = if key == :initial_call, do: :full, else: :basic
    o = Map.put(o, :detail, detail)

    with {:ok, group_of} <- grouping(node, key, o),
         {:ok, s} <- Accounting.snapshot(node, o) do
      {:ok, roll(s.processes, group_of)}
    end
  end

  defp grouping(node, :application, o) do
    with {:ok, %{masters: masters, leaders: leaders}} <-
           Remote.call(node, :applications, [], o.deadline) do
      apps = Map.new(masters)
      leader = Map.new(leaders)
      {:ok, fn r -> Map.get(apps, Map.get(leader, r.pid)) end}
    end
  end

  defp grouping(_node, :registered_name, _o), do: {:ok, & &1.registered_name}

  defp grouping(_node, :initial_call, _o), do: {:ok, & &1.initial_call}
  defp grouping(_node, :label, _o), do: {:ok, & &1.label}

  @doc "Rolls `records` up by `group_of.(record)`."
  @spec roll([map()], (map() -> term())) :: [map()]
  def roll(records, group_of) do
    records
    |> Enum.group_by(group_of)
    |> Enum.map(fn {g, rs} ->
      mem = sum(rs, :memory)
      pss = sum(rs, :binary_pss)
      native = sum(rs, :native_store_bytes)

      %{
        group: g,
        processes: length(rs),
        memory: mem,
        binary_pss: pss,
        native_store_bytes: native,
        total: mem + pss + native
      }
    end)
    |> Enum.sort_by(&{-&1.total, inspect(&1.group)})
  end

  defp sum(rs, k), do: Enum.reduce(rs, 0, &(&2 + (Map.fetch!(&1, k) || 0)))
end
