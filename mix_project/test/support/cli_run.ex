defmodule Binscope.CLIRun do
  @moduledoc """
  Runs a mix task's command line (`Binscope.CLI.run/3`, with `"HELP TEXT\\n"` as its help) as a
  test sees it: `{status, stdout, stderr}`.
  """

  import ExUnit.CaptureIO

  @doc "`{status, stdout, stderr}` of `task` run with `argv`."
  def run(task, argv) do
    parent = self()

    err =
      capture_io(:stderr, fn ->
        out =
          capture_io(fn ->
            send(parent, {:status, Binscope.CLI.run(task, argv, "HELP TEXT\n")})
          end)

        send(parent, {:out, out})
      end)

    status = receive(do: ({:status, s} -> s))
    out = receive(do: ({:out, o} -> o))
    {status, out, err}
  end
end
