defmodule Binscope.Bench.ReconAnchor do
  @moduledoc """
  The anchor of the scale suite: recon's `bin_leak/1` and `proc_count/2`, reimplemented here
  because recon is a hex package and hex cannot be reached (`Binscope` needs only OTP).

  This module mirrors recon's algorithm (ferd/recon, `src/recon.erl` `bin_leak/1` and
  `proc_count/2`, `src/recon_lib.erl` `proc_attrs/1,2`, `fold_processes/2` and
  `sublist_top_n_attrs/2`, read at commit fcbdf76), step for step, so its cost is recon's:

    * `proc_attrs(attr)`: every process but the caller (the processes iterator on OTP 28+,
      `erlang:processes/0` before), one `process_info(pid, [attr, registered_name,
      current_function, initial_call])` each, kept as `{pid, value, [name | [init, cur]]}` (the
      name only when it is an atom);
    * `bin_leak(n)`: every process (the caller too): its `binary` attributes, a forced
      `garbage_collect/1`, its `binary` attributes again; the result is `{pid, refs_before -
      refs_after, id}` (`{pid, 0, []}` when anything raised), the top `n` returned with the
      count negated, as recon does;
    * the top `n` of a list of `{key, value, id}` by `{value, key}`: a pairing heap of at most
      `n` elements, the smallest at its root, which each larger element replaces; returned
      largest first.

  Written from the algorithm, not copied: no recon source is included.
  """

  @doc "recon's `bin_leak/1`: `[{pid, -freed_refs, id}]`, most references freed first."
  @spec bin_leak(pos_integer()) :: [{pid(), integer(), list()}]
  def bin_leak(n) do
    fold_processes(
      fn pid, acc ->
        result =
          try do
            {:ok, {_, pre, id}} = proc_attrs(:binary, pid)
            :erlang.garbage_collect(pid)
            {:ok, {_, post, _}} = proc_attrs(:binary, pid)
            {pid, length(pre) - length(post), id}
          catch
            _, _ -> {pid, 0, []}
          end

        [result | acc]
      end,
      []
    )
    |> top_n(n)
    |> Enum.map(fn {pid, v, id} -> {pid, -v, id} end)
  end

  @doc "recon's `proc_count/2`: the `n` processes with the largest `attr`, largest first."
  @spec proc_count(atom(), pos_integer()) :: [{pid(), term(), list()}]
  def proc_count(attr, n), do: top_n(proc_attrs(attr), n)

  @doc "recon_lib's `proc_attrs/1`: the attributes of every process but the caller."
  @spec proc_attrs(atom()) :: [{pid(), term(), list()}]
  def proc_attrs(attr) do
    me = self()

    fold_processes(
      fn
        ^me, acc ->
          acc

        pid, acc ->
          case proc_attrs(attr, pid) do
            {:ok, a} -> [a | acc]
            {:error, _} -> acc
          end
      end,
      []
    )
  end

  @doc "recon_lib's `proc_attrs/2` (`:binary_memory` sums the binary list, as recon's does)."
  @spec proc_attrs(atom(), pid()) :: {:ok, {pid(), term(), list()}} | {:error, :undefined}
  def proc_attrs(:binary_memory, pid) do
    case :erlang.process_info(pid, [:binary, :registered_name, :current_function, :initial_call]) do
      [{_, bins}, {:registered_name, name}, init, cur] ->
        {:ok, {pid, Enum.reduce(bins, 0, fn {_, m, _}, t -> m + t end), id(name, init, cur)}}

      :undefined ->
        {:error, :undefined}
    end
  end

  def proc_attrs(attr, pid) do
    case :erlang.process_info(pid, [attr, :registered_name, :current_function, :initial_call]) do
      [{_, value}, {:registered_name, name}, init, cur] -> {:ok, {pid, value, id(name, init, cur)}}
      :undefined -> {:error, :undefined}
    end
  end

  defp id(name, init, cur) when is_atom(name), do: [name, init, cur]
  defp id(_name, init, cur), do: [init, cur]

  @doc "recon_lib's `fold_processes/2`: the processes iterator where the VM has one (OTP 28+)."
  @spec fold_processes((pid(), acc -> acc), acc) :: acc when acc: term()
  def fold_processes(fun, acc) do
    if function_exported?(:erlang, :processes_iterator, 0) do
      fold_iter(fun, acc, apply(:erlang, :processes_iterator, []))
    else
      :lists.foldl(fun, acc, :erlang.processes())
    end
  end

  defp fold_iter(fun, acc, iter) do
    case apply(:erlang, :processes_next, [iter]) do
      {pid, next} -> fold_iter(fun, fun.(pid, acc), next)
      :none -> acc
    end
  end

  @doc """
  recon_lib's `sublist_top_n_attrs/2`: the `n` elements of `list` (`{key, value, id}`) with the
  largest `{value, key}`, largest first, through a pairing heap of at most `n` elements.
  """
  @spec top_n([{term(), term(), term()}], non_neg_integer()) :: [{term(), term(), term()}]
  def top_n(_list, 0), do: []
  def top_n(list, n), do: fill(list, n, [])

  # A pairing heap is [] or [{key, elem} | subheaps], its root the smallest key.
  defp fill(list, 0, heap), do: full(list, heap)
  defp fill([], _n, heap), do: to_list(heap, [])
  defp fill([{y, x, _} = e | t], n, heap), do: fill(t, n - 1, insert({{x, y}, e}, heap))

  defp full([], heap), do: to_list(heap, [])

  defp full([{y, x, _} = e | t], [{k, _} | subs] = heap) do
    if {x, y} > k,
      do: full(t, insert({{x, y}, e}, pairs(subs))),
      else: full(t, heap)
  end

  defp to_list([], acc), do: acc
  defp to_list([{_, e} | subs], acc), do: to_list(pairs(subs), [e | acc])

  defp insert(e, []), do: [e]
  defp insert(e, [e2 | _] = h) when e <= e2, do: [e, h]
  defp insert(e, [e2 | h]), do: [e2, [e] | h]

  defp meld(h1, []), do: h1
  defp meld([e1 | h1], [e2 | _] = h2) when e1 <= e2, do: [e1, h2 | h1]
  defp meld(h1, [e2 | h2]), do: [e2, h1 | h2]

  defp pairs([]), do: []
  defp pairs([h]), do: h
  defp pairs([a, b | t]), do: meld(meld(a, b), pairs(t))
end
