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

  Options:

    --node NAME          inspect NAME (name@host) instead of this VM; connects as a hidden node.
                         The target needs no Binscope installed: the OTP-only collector is loaded
                         onto it for the scan.
    --cookie C           the target's cookie (never printed), or
    --cookie-file F      read it from F (default: ~/.erlang.cookie, as OTP does)
    --format FMT         table (default), json or csv
    --timeout MS         give up on the node after MS milliseconds (default 30000)
    --help               this text

  Progress goes to stderr every second while a scan runs; the report goes to stdout.
  """
  use Mix.Task

  @impl true
  def run(argv) do
    Mix.Task.run("compile")
    Code.ensure_loaded!(Binscope.Native)

    case Binscope.CLI.run(:leaks, argv, @moduledoc) do
      0 -> :ok
      status -> exit({:shutdown, status})
    end
  end
end
