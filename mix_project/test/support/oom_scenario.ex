defmodule Binscope.Hardening.OomScenario do
  @moduledoc false
  # Runs in a separate VM started under an address-space limit (`prlimit --as=...`, see
  # test/binscope/hardening/oom_test.exs): fills native memory until the store refuses, and
  # reports what it saw on stdout as one line `RESULT <base64 of term_to_binary(map)>`, then halts
  # with status 0. An abort of the VM (the bug this guards against) shows as another exit status
  # and no RESULT line.

  alias Binscope.Store

  @kib 1024
  @mib 1024 * 1024

  @doc "Entry point (`erl -eval`): `small` is how many 100-byte puts to make before the ladder."
  def main(small \\ 200_000) do
    result = run(small)
    IO.puts("RESULT " <> Base.encode64(:erlang.term_to_binary(result)))
    :erlang.halt(0)
  end

  defp run(small) do
    {:ok, _} = Application.ensure_all_started(:binscope)
    base = Store.stats()
    parent = self()

    # The holder keeps every binary; it answers with what it saw, then drops them all on :free.
    holder =
      spawn(fn ->
        # Many small entries first: the bookkeeping (entry table, handle index, resources) grows.
        smalls = for i <- 1..small, do: Store.put!(<<i::800>>, label: :oom_small)

        ladder =
          for size <- [256 * @mib, 16 * @mib, @mib, 64 * @kib, 4 * @kib] do
            {size, fill(fn -> Store.alloc(size, label: :oom_ladder) end)}
          end

        # Then small copies (fresh bytes every time) until they are refused too.
        puts = fill(fn -> Store.put(:rand.bytes(16) <> <<0::32640>>) end)
        at_limit = Store.stats()
        summary = for {size, {n, reason, _}} <- ladder, do: {size, n, reason}
        send(parent, {:filled, length(smalls), summary, Tuple.delete_at(puts, 2), at_limit})
        receive do: (:free -> :ok)
        # Keeps every binary alive until here.
        _ = {smalls, ladder, puts}
      end)

    {small, ladder, puts, at_limit} = receive do: ({:filled, s, l, p, a} -> {s, l, p, a})

    ref = Process.monitor(holder)
    send(holder, :free)
    receive do: ({:DOWN, ^ref, _, _, _} -> :ok)
    freed = settle(base)

    # The node still works: a put, a stats call, a process.
    {:ok, after_bin} = Store.put("still here")
    answers = Task.await(Task.async(fn -> :pong end))

    %{
      base: base,
      small: small,
      at_limit: at_limit,
      ladder: ladder,
      puts: puts,
      freed: freed,
      after_put: after_bin,
      answers: answers
    }
  end

  # Calls `f` until it returns an error; returns {successes, first error, kept binaries}.
  defp fill(f, acc \\ [], n \\ 0) do
    case f.() do
      {:ok, bin} -> fill(f, [bin | acc], n + 1)
      {:error, reason} -> {n, reason, acc}
    end
  end

  defp settle(base, tries \\ 400) do
    :erlang.garbage_collect()
    s = Store.stats()

    cond do
      s.live_count == base.live_count or tries == 0 -> s
      true -> Process.sleep(10) && settle(base, tries - 1)
    end
  end
end
