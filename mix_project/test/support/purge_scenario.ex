defmodule Binscope.Hardening.PurgeScenario do
  @moduledoc false
  # Runs on a peer node (it must be compiled to disk for the peer to load it): hold a store
  # binary, purge and delete Binscope.Native, load it again, and check that the reloaded library
  # still accounts for the binary made before, and releases it when it is collected.

  def run do
    {:ok, _} = Application.ensure_all_started(:binscope)
    parent = self()

    holder =
      spawn(fn ->
        bin = Binscope.Store.put!(:binary.copy("p", 1_000_000))
        send(parent, {:held, byte_size(bin)})

        receive do
          :release -> send(parent, {:sum, for(<<b <- bin>>, reduce: 0, do: (a -> a + b))})
        end
      end)

    held_size = receive do: ({:held, n} -> n)
    before = Binscope.Store.stats()
    :code.purge(Binscope.Native)
    true = :code.delete(Binscope.Native)
    :code.purge(Binscope.Native)
    reload = :code.load_file(Binscope.Native)
    after_reload = Binscope.Store.stats()
    {:ok, fresh} = Binscope.Store.put("made after the reload")
    with_fresh = Binscope.Store.stats()

    ref = Process.monitor(holder)
    send(holder, :release)
    sum = receive do: ({:sum, s} -> s)
    receive do: ({:DOWN, ^ref, _, _, _} -> :ok)
    released = wait_for(fn -> Binscope.Store.stats().live_count == 1 end)

    %{
      held_size: held_size,
      reload: reload,
      live_before: before.live_count,
      live_after_reload: after_reload.live_count,
      live_with_fresh: with_fresh.live_count,
      old_binary_sum: sum,
      released_old: released,
      fresh: fresh,
      alive: true
    }
  end

  defp wait_for(fun, tries \\ 200) do
    cond do
      fun.() -> true
      tries == 0 -> false
      true -> Process.sleep(5) && wait_for(fun, tries - 1)
    end
  end
end
