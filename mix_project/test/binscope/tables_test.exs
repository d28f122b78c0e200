defmodule Binscope.TablesTest do
  use ExUnit.Case, async: true

  alias Binscope.Render
  alias Binscope.Render.JSON

  doctest Binscope.Render.Table
  doctest Binscope.Render.Format
  doctest Binscope.Printer

  # A pid of another node, as this node holds it (NEW_PID_EXT: node, number, serial, creation).
  defp remote_pid(node, number, serial) do
    name = Atom.to_string(node)

    :erlang.binary_to_term(
      <<131, 88, 118, byte_size(name)::16, name::binary, number::32, serial::32, 7::32>>
    )
  end

  defp row(over) do
    Map.merge(
      %{
        pid: self(),
        node: node(),
        registered_name: nil,
        label: nil,
        initial_call: {:erlang, :apply, 2},
        current_function: {:prim_inet, :recv0, 3},
        memory: 2_700,
        binary_bytes: 16 * 1_048_576,
        binary_pss: 16 * 1_048_576,
        binary_uss: 16 * 1_048_576,
        native_bytes: 0,
        message_queue_len: 0
      },
      over
    )
  end

  defp leak_row(over) do
    row(
      Map.merge(
        %{
          reclaimed_bytes: 0,
          reclaimed_refs: 0,
          estimated_bytes: 100,
          likely_garbage_bytes: 0,
          suggestion: :binary_copy,
          reason: String.duplicate("a long reason with figures ", 20) <> "; and its remedy"
        },
        over
      )
    )
  end

  test "a remote pid prints as its own node sees it, its node once above the rows" do
    pid = remote_pid(:app@host, 150, 3)
    refute inspect(pid) =~ "<0.150.3>"
    assert Render.pid_text(pid) == "<0.150.3>"
    assert Render.pid_text(self()) == List.to_string(:erlang.pid_to_list(self()))

    out =
      Render.render(:top, [row(%{pid: pid, node: :app@host})], :table, width: 100)
      |> IO.iodata_to_binary()

    assert ["node: app@host", "pid " <> _ | _] = String.split(out, "\n")
    assert out =~ "<0.150.3> |" and not (out =~ "#PID")

    # JSON and CSV: the same local form, with the node next to it.
    json = Render.render(:top, [row(%{pid: pid, node: :app@host})], :json)
    json = IO.iodata_to_binary(json)
    assert json =~ ~s("pid": "<0.150.3>") and json =~ ~s("node": "app@host")

    csv = Render.render(:top, [row(%{pid: pid})], :csv) |> IO.iodata_to_binary()
    assert csv =~ "<0.150.3>"

    # Rows of two nodes: each pid names its node.
    two = [row(%{pid: pid}), row(%{pid: remote_pid(:b@host, 9, 0)})]
    out = Render.render(:top, two, :table, width: 100) |> IO.iodata_to_binary()
    assert out =~ "app@host <0.150.3>" and out =~ "b@host <0.9.0>"
    refute out =~ "node:"
  end

  test "a process is named by its registered name, label, proc_lib initial call, current function" do
    assert Render.name(row(%{registered_name: :router, label: :l})) == ":router"
    assert Render.name(row(%{label: {:conn, 7}})) == "{:conn, 7}"
    assert Render.name(row(%{initial_call: {:my_server, :init, 1}})) == "my_server:init/1"
    # A spawned fun's initial call is erlang:apply/2 for every such process: say what it runs.
    assert Render.name(row(%{})) == "prim_inet:recv0/3"
    assert Render.name(row(%{initial_call: nil, current_function: nil})) == "-"
  end

  test "table rows stay within the width; JSON keeps the whole reason and writes null" do
    long = row(%{initial_call: {:"Elixir.Some.Very.Long.Module.Name.Indeed", :handle_info, 2}})

    for width <- [80, 100] do
      out =
        Render.render(:leaks, [leak_row(%{}), leak_row(long)], :table, width: width)
        |> IO.iodata_to_binary()

      lines = String.split(out, "\n", trim: true)
      assert Enum.all?(lines, &(String.length(&1) <= width)), out
      # The leaks table shows the current function and the reason's first clause, cut.
      assert out =~ "prim_inet:recv0" and out =~ "  a long reason" and out =~ "…"
      refute out =~ "remedy"

      top = Render.render(:top, [long], :table, width: width) |> IO.iodata_to_binary()
      assert top |> String.split("\n", trim: true) |> Enum.all?(&(String.length(&1) <= width))
    end

    json = Render.render(:leaks, [leak_row(%{})], :json) |> IO.iodata_to_binary()
    assert json =~ "and its remedy"
    assert json =~ ~s("registered_name": null)
  end

  test "records say nil, not :undefined, for a process without a registered name" do
    pid = spawn(fn -> Process.sleep(:infinity) end)
    {:ok, [r]} = Binscope.processes(pids: [pid])
    assert r.registered_name == nil
    refute JSON.encode(r) =~ "undefined"
    Process.exit(pid, :kill)
  end

  test "Binscope.print/1 renders results of top, leaks, memory and errors as tables" do
    out = Binscope.top(3) |> Binscope.Printer.format() |> IO.iodata_to_binary()
    lines = String.split(out, "\n", trim: true)
    assert length(lines) == 6 and hd(lines) == "node: #{node()}"
    assert Enum.at(lines, 1) =~ ~r/^pid +\| name +\| memory/

    out = Binscope.leaks(mode: :dry_run, limit: 2) |> Binscope.Printer.format()
    assert IO.iodata_to_binary(out) =~ ~r/pid +\| name +\| estimated \| likely/

    assert Binscope.memory() |> Binscope.Printer.format() |> IO.iodata_to_binary() =~ "RSS ="

    per_node = Binscope.top(1, nodes: [node()]) |> Binscope.Printer.format()
    assert IO.iodata_to_binary(per_node) =~ "node: #{node()}\npid"

    assert ExUnit.CaptureIO.capture_io(fn -> assert Binscope.print({:ok, []}) == :ok end) ==
             "(no processes)\n"
  end
end
