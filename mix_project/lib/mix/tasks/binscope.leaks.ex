defmodule Mix.Tasks.Binscope.Leaks do
  @shortdoc "Processes holding binaries only a GC would free, and what to change"
  @moduledoc """
  Finds the processes holding binaries that only a garbage collection would free,
  says how many bytes a GC gives back (exact, each binary counted once) and what
  to change.

      mix binscope.leaks
      mix binscope.leaks --mode dry_run --limit 20
      mix binscope.leaks --node app@host --cookie-file ~/.app_cookie --mode full

  #{Binscope.CLI.help(:leaks)}
  """
  use Mix.Task

  @impl true
  def run(argv), do: Binscope.CLI.main(:leaks, argv, @moduledoc)
end
