defmodule Binscope.Store.Options do
  # Validation of user-supplied options and arguments. Every bad value raises ArgumentError with a
  # message naming the function and the value; nothing here creates an atom from user input.
  @moduledoc false

  import Bitwise, only: [<<<: 2]

  # The limits are the native code's (`Binscope.Store.limits/0`), never restated here.
  defp max_label_bytes, do: Binscope.Store.limits().max_label_bytes
  defp max_size, do: Binscope.Store.limits().max_binary_size

  @doc "Validates a keyword list against `allowed` keys and returns it as a map."
  def keyword!(opts, allowed, fun) do
    unless is_list(opts) and Keyword.keyword?(opts) do
      raise ArgumentError, "#{fun} expects a keyword list of options, got: #{short(opts)}"
    end

    case Enum.reject(Keyword.keys(opts), &(&1 in allowed)) do
      [] ->
        Map.new(opts)

      unknown ->
        raise ArgumentError,
              "#{fun} got unknown option(s) #{short(unknown)}; known options: #{inspect(allowed)}"
    end
  end

  def binary!(data, _fun) when is_binary(data), do: data

  def binary!(other, fun),
    do: raise(ArgumentError, "#{fun} expects a binary, got: #{short(other)}")

  def label!(label, _fun) when is_atom(label), do: label

  def label!(label, fun) when is_binary(label) do
    cond do
      byte_size(label) > max_label_bytes() ->
        raise ArgumentError,
              "#{fun}: a label is at most #{max_label_bytes()} bytes, got #{byte_size(label)}"

      not String.valid?(label) ->
        raise ArgumentError, "#{fun}: a string label must be valid UTF-8, got: #{short(label)}"

      true ->
        label
    end
  end

  def label!(other, fun),
    do: raise(ArgumentError, "#{fun}: a label is an atom or a string, got: #{short(other)}")

  def owner!(pid, fun) when is_pid(pid) do
    if node(pid) == node() do
      pid
    else
      raise ArgumentError, "#{fun}: the owner must be a local pid, got remote #{inspect(pid)}"
    end
  end

  def owner!(other, fun),
    do: raise(ArgumentError, "#{fun}: the owner must be a pid, got: #{short(other)}")

  def size!(size, fun) do
    max = max_size()

    if is_integer(size) and size >= 0 and size <= max,
      do: size,
      else:
        raise(
          ArgumentError,
          "#{fun}: size must be an integer in 0..#{max} (bytes), got: #{short(size)}"
        )
  end

  def byte!(fill, _fun) when is_integer(fill) and fill in 0..255, do: fill

  def byte!(other, fun),
    do: raise(ArgumentError, "#{fun}: fill must be an integer in 0..255, got: #{short(other)}")

  # What the NIF decodes (a u64): anything above raised a bare "argument error" from inside it.
  @max_u64 (1 <<< 64) - 1

  def non_neg_integer!(n, _name, _fun) when is_integer(n) and n >= 0 and n <= @max_u64, do: n

  def non_neg_integer!(other, name, fun),
    do:
      raise(
        ArgumentError,
        "#{fun}: #{name} must be an integer in 0..#{@max_u64}, got: #{short(other)}"
      )

  @doc "Inspects a user value without ever printing a huge term."
  def short(term), do: inspect(term, limit: 8, printable_limit: 64)
end
