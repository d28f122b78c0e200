defmodule Binscope.MemoryScenario do
  @moduledoc """
  The mixed node of issue 14, built in a fresh VM so that the test suite's own memory does not
  count: 300k small ETS objects, 50 processes holding about 1.5 MiB of heap each, one 64 MiB
  store buffer, and a binary allocator fragmented by keeping every 8th of 40,000 4 KiB
  binaries.

  `run/1` starts the child (`elixir -pa <this app's ebin>`), which builds the node, takes
  `Binscope.memory/0` and prints it (external term format, base64) on its last line.
  """

  @doc "Runs the scenario in a child VM; returns `{:ok, memory_map}` or `{:error, output}`."
  def run(extra_args \\ []) do
    ebin = Path.join(:code.lib_dir(:binscope), "ebin")
    args = extra_args ++ ["-pa", ebin, "-e", "Binscope.MemoryScenario.child()"]
    {out, status} = System.cmd(System.find_executable("elixir"), args, stderr_to_stdout: true)

    with 0 <- status,
         [last | _] <- out |> String.split("\n", trim: true) |> Enum.reverse(),
         "RESULT " <> b64 <- last do
      {:ok, b64 |> Base.decode64!() |> :erlang.binary_to_term()}
    else
      _ -> {:error, out}
    end
  end

  @doc false
  def child do
    {:ok, _} = Application.ensure_all_started(:binscope)
    t = :ets.new(:mixed_ets, [:set, :public])
    for i <- 1..300_000, do: :ets.insert(t, {i, i * 2, :ok})

    procs =
      for _ <- 1..50 do
        spawn(fn ->
          l = Enum.to_list(1..95_000)

          receive do
            :stop -> length(l)
          end
        end)
      end

    buf = Binscope.Store.alloc!(64 * 1024 * 1024, fill: ?x)
    bins = for i <- 1..40_000, do: :binary.copy(<<rem(i, 256)>>, 4096)
    kept = Enum.take_every(bins, 8)

    holder =
      spawn(fn ->
        receive do
          :stop -> length(kept)
        end
      end)

    # Drop this process's references to the 35,000 other binaries.
    :erlang.garbage_collect()
    Process.sleep(200)
    {:ok, m} = Binscope.memory()
    m = Map.put(m, :old_unaccounted, m.rss - (m.total + m.native_resident))
    IO.puts("RESULT " <> Base.encode64(:erlang.term_to_binary(m)))
    Enum.each([holder | procs], &send(&1, :stop))
    byte_size(buf) + :ets.info(t, :size)
  end
end
