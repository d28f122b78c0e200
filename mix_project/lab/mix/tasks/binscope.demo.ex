defmodule Mix.Tasks.Binscope.Demo do
  @shortdoc "Runs the Binscope demo tour, or one demo by name"
  @moduledoc """
  Runs the demo tour (every demo, in order) or one demo:

      mix binscope.demo
      mix binscope.demo store

  Options:

      --list               the demos, one per line
      --help               this text

  The tour uses a few hundred MiB of memory for short moments and takes about a minute.
  """
  use Mix.Task

  @impl true
  def run(args) do
    case Binscope.Demo.parse_argv(args) do
      :help ->
        IO.write(@moduledoc)

      {:error, msg} ->
        IO.puts(:stderr, "error: " <> msg)
        exit({:shutdown, 1})

      :list ->
        for mod <- Binscope.Demo.demos(), do: IO.puts("#{mod.name()}\t#{mod.title()}")

      what ->
        Mix.Task.run("compile")
        Code.ensure_loaded!(Binscope.Native)

        case what do
          :tour -> Binscope.Demo.tour()
          {:demo, mod} -> Binscope.Demo.run(mod)
        end
    end

    :ok
  end
end
