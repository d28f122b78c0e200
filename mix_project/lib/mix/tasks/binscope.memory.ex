defmodule Mix.Tasks.Binscope.Memory do
  @shortdoc "Where a node's memory is: VM categories, native memory, RSS, unaccounted"
  @moduledoc """
  Where a node's memory is, in bytes: every `:erlang.memory/0` category,
  Binscope's store and native (jemalloc) memory, OS RSS and what none of them
  accounts for.

      mix binscope.memory
      mix binscope.memory --node app@10.0.0.5 --cookie-file ~/.app_cookie \\
        --format json

  Cost: reads counters only; safe on a busy production node.

  #{Binscope.CLI.help(:memory)}
  """
  use Mix.Task

  @impl true
  def run(argv), do: Binscope.CLI.main(:memory, argv, @moduledoc)
end
