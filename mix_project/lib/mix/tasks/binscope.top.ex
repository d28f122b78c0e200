defmodule Mix.Tasks.Binscope.Top do
  @shortdoc "The processes using the most memory or binaries (PSS/USS, native)"
  @moduledoc """
  The processes with the largest metric, with shared binaries attributed fairly
  (PSS), the bytes only they hold (USS) and the native bytes the VM does not show.

      mix binscope.top --by binary_pss --limit 10
      mix binscope.top --node app@host --by native_bytes --format csv
      mix binscope.top --window 5000 --by memory

  Cost: one process_info/2 call per process; no GC; safe on a busy production
  node.

  #{Binscope.CLI.help(:top)}
  """
  use Mix.Task

  @impl true
  def run(argv), do: Binscope.CLI.main(:top, argv, @moduledoc)
end
