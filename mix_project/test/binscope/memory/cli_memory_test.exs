defmodule Binscope.Memory.CLITest do
  use ExUnit.Case, async: true

  alias Binscope.CLI
  alias Binscope.Render

  test "top --window MS is parsed and validated" do
    assert {:ok, %{window: 500}} = CLI.parse(:top, ["--window", "500"])
    assert {:error, msg} = CLI.parse(:top, ["--window", "0"])
    assert msg =~ "--window"
    assert {:error, _} = CLI.parse(:memory, ["--window", "5"])
  end

  test "memory renders the reconciliation, the allocators and the diagnosis; csv stays flat" do
    {:ok, m} = Binscope.memory()
    table = IO.iodata_to_binary(Render.render(:memory, m, :table))
    assert table =~ "RSS = rss_file + rss_shmem + native_resident + vm_resident + unaccounted"
    assert table =~ "vm_resident" and table =~ "binary_alloc"

    csv = IO.iodata_to_binary(Render.render(:memory, m, :csv))
    [header | rows] = String.split(csv, "\r\n", trim: true)
    assert header == "category,bytes"
    assert Enum.all?(rows, &match?([_, _], String.split(&1, ",")))
    assert Enum.any?(rows, &String.starts_with?(&1, "binary_alloc.free,"))
    assert Enum.any?(rows, &String.starts_with?(&1, "unaccounted,"))
  end

  test "top --watch refreshes N times; not a terminal: appended, no escape codes" do
    out =
      ExUnit.CaptureIO.capture_io(fn ->
        assert 0 == CLI.run(:top, ~w(--watch 1 --count 2 --limit 2), "")
      end)

    assert length(String.split(out, "binscope top ")) == 3
    assert out =~ "growth over 1 s" and out =~ "growth"
    refute out =~ "\e["
    assert {:error, _} = CLI.parse(:top, ~w(--watch 0))
  end

  test "top with a window shows the growth column" do
    rows = [%{pid: self(), registered_name: nil, initial_call: nil, growth: 2048, memory: 1}]
    out = IO.iodata_to_binary(Render.render(:top, rows, :table))
    assert out =~ "growth" and out =~ "2.0K"
  end
end
