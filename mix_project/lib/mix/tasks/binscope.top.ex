defmodule Mix.Tasks.Binscope.Top do
  @shortdoc "The processes using the most memory or binaries (PSS/USS, native)"
  @moduledoc """
  The processes with the largest metric, with shared binaries attributed fairly (PSS), the
  bytes only they hold (USS) and the native bytes the VM does not show.

      mix binscope.top --by binary_pss --limit 10
      mix binscope.top --node app@host --by native_bytes --format csv
      mix binscope.top --window 5000 --by memory

  Extra options:

      --limit N            rows (default 20)
      --by METRIC          memory (default), binary_pss, binary_uss, binary_bytes, native_bytes,
                           total_heap_size, message_queue_len, reductions, minor_gcs, ...
      --detail LEVEL       full (default) or basic: only name, memory and binaries, at about
                           the cost of a plain process_info(pid, [:binary, :memory]) sweep
                           (full detail's GC items cost about 2.5x more)
      --workers N          scan with N processes (default: one per scheduler of the target but
                           one; more ends the scan sooner but competes for more schedulers)
      --window MS          rank by growth over MS milliseconds instead of size: two scans MS
                           apart; a growth column shows each process's delta
      --watch SECONDS      refresh every SECONDS like top, ranked by growth over the last
                           interval; redraws in place on a terminal, appends otherwise
      --count N            with --watch: stop after N refreshes

  Cost: one process_info/2 call per process; no GC; safe on a busy production node.

  #{Binscope.CLI.common_help()}
  """
  use Mix.Task

  @impl true
  def run(argv), do: Binscope.CLI.main(:top, argv, @moduledoc)
end
