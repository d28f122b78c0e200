defmodule Binscope.Collector do
  @moduledoc false
  # The records `:binscope_collector` sends (one process of a snapshot, one process of a GC
  # round), read from their one definition, include/binscope_collector.hrl, so that Elixir
  # matches them by field name. The attribution NIF reads a record's binary list at
  # `binaries_index/0`, the index these records agree on.

  require Record

  @hrl Path.expand("../../include/binscope_collector.hrl", __DIR__)
  @external_resource @hrl

  @basic Record.extract(:binscope_basic, from: @hrl)
  @process Record.extract(:binscope_process, from: @hrl)

  Record.defrecord(:basic, :binscope_basic, @basic)
  Record.defrecord(:process, :binscope_process, @process)
  Record.defrecord(:gc, :binscope_gc, Record.extract(:binscope_gc, from: @hrl))
  Record.defrecord(:scan, :binscope_scan, Record.extract(:binscope_scan, from: @hrl))

  # The tuple index (0-based, the tag at 0) of every field of each kind of snapshot record.
  @fields %{
    binscope_basic: Map.new(Enum.with_index(Keyword.keys(@basic), 1)),
    binscope_process: Map.new(Enum.with_index(Keyword.keys(@process), 1))
  }

  # The index of the binary list, the same in both kinds of snapshot record.
  @binaries_index @fields.binscope_process.binaries
  if @fields.binscope_basic.binaries != @binaries_index do
    raise "binscope_basic and binscope_process disagree on the index of binaries"
  end

  # The full leak scan's NIF (leaks_full_rank) reads a GC round's records in place: pid, the
  # binary lists before and after, reductions, then heap and stack words, in this order.
  if Enum.map(Record.extract(:binscope_gc, from: @hrl), &elem(&1, 0)) !=
       [:pid, :binaries_before, :binaries_after, :reductions, :total_heap_size, :stack_size] ++
         [:message_queue_len] do
    raise "binscope_gc's fields moved: native/binscope_nif/src/scan.rs reads them by position"
  end

  @doc false
  # The tuple index (0-based, the tag at 0) of `field` in a snapshot record tagged `tag`, or nil
  # when that kind of record has no such field.
  @spec field_index(atom(), atom()) :: pos_integer() | nil
  def field_index(tag, field), do: @fields |> Map.get(tag, %{}) |> Map.get(field)

  @doc false
  # The tuple index (0-based, the tag at 0) of a snapshot record's binary list.
  @spec binaries_index() :: non_neg_integer()
  def binaries_index, do: @binaries_index
end
