defmodule Binscope.Hardening.HostileInputTest do
  # Every public function of Binscope.Store and Binscope (memory, processes, snapshot, top,
  # leaks), and the mix tasks' option parsing, called with hostile arguments: each call raises
  # a clear ArgumentError (naming the function, never the NIF's bare "argument error") or
  # returns {:error, reason}; every numeric option at its extremes either works or raises an
  # ArgumentError naming that option; nothing else, the VM stays up, no counter drifts, no atom
  # is created. `make soak` runs the same test with 1,000,000 calls.
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
        "#{outcome.error_tuple} {:error, _}, #{outcome.accepted} valid extremes accepted, " <>
        "#{length(outcome.unexpected)} unexpected (unclear errors included), " <>
        "#{new_atoms} new atoms"
    )

    assert outcome.unexpected == []
    assert outcome.argument_error + outcome.error_tuple + outcome.accepted == @calls
    assert settle() == base, "counters drifted"
    assert new_atoms == 0, "atoms were created from input"
  end

  defp run_calls(seed, n) do
    Hostile.stream(seed)
    |> Stream.take(n)
    |> Enum.reduce(%{argument_error: 0, error_tuple: 0, accepted: 0, unexpected: []}, &run_one/2)
  end

  # A numeric extreme: a valid value may succeed; an invalid one must name its option.
  defp run_one({what, fun, option}, acc) do
    case fun.() do
      {:error, reason} when is_atom(reason) -> %{acc | error_tuple: acc.error_tuple + 1}
      _valid -> %{acc | accepted: acc.accepted + 1}
    end
  rescue
    e in ArgumentError ->
      if clear?(e) and Exception.message(e) =~ option,
        do: %{acc | argument_error: acc.argument_error + 1},
        else: unexpected(acc, what, e)

    e ->
      unexpected(acc, what, e)
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
      if clear?(e),
        do: %{acc | argument_error: acc.argument_error + 1},
        else: unexpected(acc, what, e)

    e ->
      unexpected(acc, what, e)
  end

  # Clear: it names the function called (every message of Binscope's own validation starts
  # with it). The NIF's own bare "argument error" (an argument only rustler's decoder refused)
  # is not clear.
  defp clear?(e) do
    msg = Exception.message(e)
    msg != "argument error" and msg =~ "Binscope"
  end

  defp unexpected(acc, what, detail) do
    %{acc | unexpected: Enum.take([{what, inspect(detail, limit: 5)} | acc.unexpected], 20)}
  end
end
