defmodule Mix.Tasks.Binscope.Leaks do
  @shortdoc "Processes holding binaries only a GC would free, and what to change"
  @moduledoc """
  Finds the processes holding binaries that only a garbage collection would free, says how
  many bytes a GC gives back (exact, each binary counted once) and what to change.

      mix binscope.leaks
      mix binscope.leaks --mode dry_run --limit 20
      mix binscope.leaks --node app@host --cookie-file ~/.app_cookie --mode full

  Extra options:

      --mode MODE          targeted (default): forces a GC on the top --candidates processes only;
                           full: forces a GC of EVERY process (each pauses for its GC: not on a busy
                           production node); dry_run: forces no GC, ranks an estimate
      --limit N            results (default 10)
      --candidates K       processes collected in targeted mode (default 20)
      --idle-ms MS         how long the shortlist is watched for activity before ranking
                           (default 50; idle processes rank by all the binaries only they hold)
      --workers N          scan with N processes (default: one per scheduler of the target but
                           one; more ends the scan sooner but competes for more schedulers)

  #{Binscope.CLI.common_help()}
  """
  use Mix.Task

  @impl true
  def run(argv), do: Binscope.CLI.main(:leaks, argv, @moduledoc)
end
