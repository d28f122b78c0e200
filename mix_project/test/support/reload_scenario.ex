defmodule Binscope.Hardening.ReloadScenario do
  @moduledoc false
  # Runs in a separate VM (test/binscope/hardening/reload_test.exs): purges and reloads
  # Binscope.Native many times, upgrades it in place, and tries to upgrade it with a different
  # copy of the library. Reports on stdout as `RESULT <base64 of term_to_binary(map)>`, then
  # halts with status 0. Before the fix each purge + load mapped a fresh copy of the library
  # (6-12 MB of address space each) and the VM aborted at the 1012th.

  alias Binscope.Store

  @mod Binscope.Native

  @doc "Entry point (`erl -eval`): `cycles` purge + load cycles, then the upgrade checks."
  def main(cycles \\ 2000) do
    result = run(cycles)
    IO.puts("RESULT " <> Base.encode64(:erlang.term_to_binary(result)))
    :erlang.halt(0)
  end

  defp run(cycles) do
    {:module, @mod} = :code.ensure_loaded(@mod)
    # A few cycles first, so one-time growth (code and atom tables, allocator carriers) is done.
    Enum.each(1..20, fn _ -> reload() end)
    before = vm()
    reloads = Enum.map(1..cycles, fn _ -> reload() end)
    after_cycles = vm()
    {:ok, _} = Application.ensure_all_started(:binscope)
    {:ok, "after cycles"} = Store.put("after cycles")

    %{
      cycles: cycles,
      reloads_ok: Enum.count(reloads, &(&1 == {:module, @mod})),
      before: before,
      after: after_cycles,
      upgrade: upgrade(),
      other_copy: other_copy()
    }
  end

  defp reload do
    :code.purge(@mod)
    true = :code.delete(@mod)
    :code.purge(@mod)
    :code.load_file(@mod)
  end

  # Loading the same library over loaded code (what IEx's `r` does) upgrades in place: the
  # binary made before is still counted and readable, and released when its holder drops it.
  defp upgrade do
    held = Store.put!(:binary.copy("u", 100_000), label: :upgrade)
    base = length(Store.live(label: :upgrade))

    results =
      for _ <- 1..50 do
        loaded = :code.load_file(@mod)
        {:ok, fresh} = Store.put("fresh", label: :upgrade)
        purged = :code.purge(@mod)
        {loaded, fresh, purged}
      end

    with_held = length(Store.live(label: :upgrade))

    # A new owner after the upgrades is monitored through the watcher made before them (its
    # resource type belongs to a purged instance now): its exit must still be seen.
    parent = self()

    {owner, ref} =
      spawn_monitor(fn -> send(parent, {:owned, Store.put!("owned", label: :owned)}) end)

    owned = receive do: ({:owned, b} -> b)
    receive do: ({:DOWN, ^ref, _, _, _} -> :ok)

    owner_down_seen =
      wait_for(fn ->
        match?([%{owner: ^owner, owner_alive?: false}], Store.live(label: :owned))
      end)

    _ = byte_size(owned)
    sum = for <<b <- held>>, reduce: 0, do: (a -> a + b)
    listed = Enum.any?(Store.live(label: :upgrade), &(&1.size == 100_000))

    %{
      loads: Enum.frequencies(for {l, _, _} <- results, do: l),
      fresh: Enum.uniq(for {_, f, _} <- results, do: f),
      live_before: base,
      live_after: with_held,
      held_sum: sum,
      held_listed: listed,
      owner_down_seen: owner_down_seen
    }
  end

  # A different copy of the library (another file) must not take over this one's resources:
  # its on_load fails, and the loaded code keeps working.
  defp other_copy do
    dir = Path.join(System.tmp_dir!(), "binscope_reload_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    so = Path.join(to_string(:code.priv_dir(:binscope)), "native/libbinscope_nif.so")
    File.cp!(so, Path.join(dir, "libbinscope_nif.so"))

    stubs =
      for {name, arity} <- @mod.__info__(:functions), name != :load_nif do
        args = Enum.map_join(1..arity//1, ", ", &"_a#{&1}")
        "def #{name}(#{args}), do: :erlang.nif_error(:not_loaded)"
      end

    source = """
    defmodule #{inspect(@mod)} do
      @on_load :load_nif
      def load_nif do
        result = :erlang.load_nif(~c"#{dir}/libbinscope_nif", 0)
        :persistent_term.put(:binscope_other_copy, result)
        result
      end
      #{Enum.join(stubs, "\n  ")}
    end
    """

    Code.compiler_options(ignore_module_conflict: true)
    Code.compile_string(source)

    result = :persistent_term.get(:binscope_other_copy, :not_run)
    File.rm_rf!(dir)
    %{load: result, put_after: Store.put("after the other copy"), stats: Store.stats()}
  end

  defp wait_for(fun, tries \\ 200) do
    cond do
      fun.() -> true
      tries == 0 -> false
      true -> Process.sleep(5) && wait_for(fun, tries - 1)
    end
  end

  defp vm do
    for line <- String.split(File.read!("/proc/self/status"), "\n"),
        [key, value] <- [String.split(line, ":", parts: 2)],
        key in ["VmSize", "VmRSS"],
        into: %{},
        do: {key, value |> String.trim() |> String.split() |> hd() |> String.to_integer()}
  end
end
