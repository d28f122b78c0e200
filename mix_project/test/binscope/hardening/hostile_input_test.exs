defmodule Binscope.Hardening.HostileInputTest do
  # Every public function of Binscope.Store and Binscope (memory, processes, snapshot, top,
  # leaks), and the mix tasks' option parsing, called with hostile arguments: each call raises
  # ArgumentError or returns {:error, reason}; nothing else, the VM stays up, no counter drifts,
  # no atom is created. `make soak` runs the same test with 1,000,000 calls.
  use Binscope.StoreCase, async: false

  alias Binscope.Hostile

  @calls String.to_integer(System.get_env("BINSCOPE_HOSTILE_CALLS", "10000"))

  @tag timeout: :infinity
  test "#{@calls} hostile calls: only ArgumentError or {:error, _}" do
    seed = String.to_integer(System.get_env("BINSCOPE_SEED", "#{:erlang.phash2(make_ref())}"))

    # Warm up through the very same code path with another seed: the first `inspect` of each
    # kind of term loads protocol implementations (module and function atoms). That is code
    # loading, not atoms made from input; after it, no call may create an atom.
    in_process(fn -> run_calls(seed + 1, 3_000) end)
    base = settle()
    atoms = :erlang.system_info(:atom_count)
    outcome = in_process(fn -> run_calls(seed, @calls) end)
    new_atoms = :erlang.system_info(:atom_count) - atoms

    IO.puts(
      "\nhostile input: #{@calls} calls (seed #{seed}): #{outcome.argument_error} ArgumentError, " <>
        "#{outcome.error_tuple} {:error, _}, #{length(outcome.unexpected)} unexpected, " <>
        "#{new_atoms} new atoms"
    )

    assert outcome.unexpected == []
    assert outcome.argument_error + outcome.error_tuple == @calls
    assert settle() == base, "counters drifted"
    assert new_atoms == 0, "atoms were created from input"
  end

  defp run_calls(seed, n) do
    Hostile.stream(seed)
    |> Stream.take(n)
    |> Enum.reduce(%{argument_error: 0, error_tuple: 0, unexpected: []}, &run_one/2)
  end

  defp run_one({what, fun}, acc) do
    case fun.() do
      {:error, reason} when is_atom(reason) -> %{acc | error_tuple: acc.error_tuple + 1}
      # The command line's parser explains itself in a message.
      {:error, msg} when is_binary(msg) and msg != "" -> %{acc | error_tuple: acc.error_tuple + 1}
      other -> unexpected(acc, what, {:returned, other})
    end
  rescue
    e in ArgumentError ->
      if Exception.message(e) == "",
        do: unexpected(acc, what, e),
        else: %{acc | argument_error: acc.argument_error + 1}

    e ->
      unexpected(acc, what, e)
  end

  defp unexpected(acc, what, detail) do
    %{acc | unexpected: Enum.take([{what, inspect(detail, limit: 5)} | acc.unexpected], 20)}
  end
end
