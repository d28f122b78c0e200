# top/2's ranking in Rust against building every record and ranking them in Elixir, both in one
# VM, sides interleaved (N idle processes holding a 100-byte binary each, K pairs a row):
#   cd mix_project && ELIXIR_ERL_OPTIONS="+P 4194304" MIX_ENV=test mix run --no-start ../scripts/top_ab.exs
# Env: N (200000), K (5). Prints the median time of each side and the median ratio (ours / the
# build-every-record path) for top(10) by memory and by binary_pss at full detail, and by memory
# at basic detail.
alias Binscope.Accounting

n = String.to_integer(System.get_env("N", "200000"))
k = String.to_integer(System.get_env("K", "5"))

_idle =
  for _ <- 1..n do
    spawn(fn ->
      b = :binary.copy(<<1::800>>)
      receive do: (:stop -> b)
    end)
  end

Process.sleep(1000)

# Milliseconds of `f` in a process of its own (as top/2 scans in Binscope.Scanner).
timed = fn f ->
  parent = self()

  spawn(fn ->
    t0 = System.monotonic_time(:microsecond)
    f.()
    send(parent, {:done, System.monotonic_time(:microsecond) - t0})
  end)

  receive do: ({:done, us} -> us / 1000)
end

every_record = fn o ->
  {:ok, s} = Accounting.snapshot(node(), Map.put(o, :top_shared, 0))
  Accounting.top_except(s.processes, 10, o.by, self())
end

ranked_in_rust = fn o ->
  {:ok, top} = Accounting.top_processes(node(), 10, o, self())
  top
end

median = fn l -> l |> Enum.sort() |> Enum.at(div(length(l), 2)) end

for {by, detail} <- [{:memory, :full}, {:binary_pss, :full}, {:memory, :basic}] do
  o = %{by: by, detail: detail, timeout: 600_000, workers: :auto}

  pairs =
    for _ <- 1..k do
      old = timed.(fn -> every_record.(o) end)
      new = timed.(fn -> ranked_in_rust.(o) end)
      {old, new}
    end

  IO.puts(
    "top(10, by: #{by}, detail: #{detail}) at #{n}: every record " <>
      "#{round(median.(Enum.map(pairs, &elem(&1, 0))))} ms, ranked in Rust " <>
      "#{round(median.(Enum.map(pairs, &elem(&1, 1))))} ms, ratio " <>
      "#{Float.round(median.(Enum.map(pairs, fn {a, b} -> b / a end)), 3)}"
  )
end
