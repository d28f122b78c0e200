defmodule Mix.Tasks.Binscope.Demo do
  @shortdoc "Runs the Binscope demo tour, or one demo by name"
  @moduledoc """
  Runs the demo tour (every demo, in order) or one demo:

      mix binscope.demo
      mix binscope.demo store

  `mix binscope.demo --list` lists the demos. The tour uses a few hundred MiB of memory for
  short moments and takes about a minute.
  """
  use Mix.Task

  @impl true
  def run(args) do
    Mix.Task.run("compile")
    Code.ensure_loaded!(Binscope.Native)

    case args do
      [] ->
        Binscope.Demo.tour()

      ["--list"] ->
        for mod <- Binscope.Demo.demos(), do: IO.puts("#{mod.name()}\t#{mod.title()}")

      [name] ->
        case Binscope.Demo.find(name) do
          {:ok, mod} -> Binscope.Demo.run(mod)
          {:error, :unknown_demo} -> Mix.raise("unknown demo #{inspect(name)}; see --list")
        end

      _ ->
        Mix.raise("usage: mix binscope.demo [NAME | --list]")
    end

    :ok
  end
end
