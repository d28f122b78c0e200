defmodule Binscope.Hardening.OomTest do
  # Out of memory, for real: a separate VM under an address-space limit fills native memory until
  # the store refuses (Binscope.Hardening.OomScenario). Before the fix it aborted with "memory
  # allocation of 816 bytes failed" (exit status 134) once a payload had taken the last bytes.
  use ExUnit.Case, async: false

  @moduletag timeout: 300_000
  @gib 1024 * 1024 * 1024

  test "a VM under prlimit --as=4GiB fills the store to :alloc_failed and stays up" do
    r = run_limited(4 * @gib, 200_000)

    # 200k small entries, then 256 MiB, 16 MiB, 1 MiB, 64 KiB and 4 KiB allocations, each size
    # until refused, then 4 KiB copies until refused: every refusal is :alloc_failed.
    assert r.small == 200_000
    assert [{_, big, :alloc_failed} | _] = r.ladder
    assert big >= 4, "expected several 256 MiB allocations under 4 GiB, got #{big}"
    assert Enum.all?(r.ladder, &match?({_, _, :alloc_failed}, &1)), inspect(r.ladder)
    assert {_, :alloc_failed} = r.puts

    # Counters at the limit account for exactly what was made, and nothing is left reserved.
    made = r.small + Enum.sum(for {_, n, _} <- r.ladder, do: n) + elem(r.puts, 0)
    assert r.at_limit.live_count == r.base.live_count + made
    assert r.at_limit.reserved_bytes == 0
    assert r.at_limit.allocs - r.at_limit.frees == r.at_limit.live_count

    # Once the holder is gone, the counters are back where they started; the node still works.
    assert Map.take(r.freed, [:live_count, :live_bytes, :reserved_bytes]) ==
             Map.take(r.base, [:live_count, :live_bytes, :reserved_bytes])

    assert r.freed.allocs - r.freed.frees == r.freed.live_count
    assert r.after_put == "still here"
    assert r.answers == :pong
  end

  # Runs the scenario in `erl` under `prlimit --as=limit`; returns its result map. Fails with the
  # VM's output when it exits with a status other than 0.
  defp run_limited(limit, small) do
    paths =
      Enum.flat_map(
        [:binscope, :elixir, :logger],
        &["-pa", Path.join(to_string(:code.lib_dir(&1)), "ebin")]
      )

    eval = "'Elixir.Binscope.Hardening.OomScenario':main(#{small})."

    {out, status} =
      System.cmd("prlimit", ["--as=#{limit}", "erl", "-noshell" | paths] ++ ["-eval", eval],
        stderr_to_stdout: true
      )

    assert status == 0, "the limited VM exited with #{status}:\n#{String.slice(out, -2000, 2000)}"
    [_, b64] = Regex.run(~r/^RESULT (\S+)$/m, out)
    :erlang.binary_to_term(Base.decode64!(b64))
  end
end
