defmodule Binscope.CLITest do
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO

  alias Binscope.{CLI, Cluster}

  doctest Binscope.CLI
  doctest Binscope.Demo
  doctest Binscope.Render.JSON
  doctest Binscope.Render.CSV

  defp run(task, argv), do: Binscope.CLIRun.run(task, argv)

  test "parse: each bad argument is a clear error" do
    for {task, argv, msg} <- [
          {:top, ["--bogus"], ~r/unknown option --bogus; binscope.top takes: --node, /},
          {:top, ["--limit", "x"], ~r/--limit must be an integer in 1..1000000, got: "x"/},
          {:top, ["--limit", "0"], ~r/--limit must be an integer in 1..1000000, got: 0/},
          {:top, ["--limit"], ~r/--limit needs a value \(an integer in 1..1000000\)/},
          {:top, ["extra"], ~r/unexpected argument "extra"/},
          {:leaks, ["--mode", "all"], ~r/--mode must be one of: dry_run, full, targeted/},
          {:memory, ["--format", "xml"], ~r/--format must be one of: csv, json, table/},
          {:memory, ["--node", "nohost"], ~r/name@host/},
          {:memory, ["--cookie", "c"], ~r/--cookie needs --node/},
          {:memory, ["--node", "a@b", "--cookie", "c", "--cookie-file", "f"], ~r/not both/},
          {:memory, ["--by", "memory"], ~r/unknown option --by/},
          {:top, ["--detail", "all"], ~r/--detail must be one of: basic, full/},
          {:top, ~w(--by heap_size --detail basic),
           ~r/with it, --by must be one of: binary_bytes/},
          {:leaks, ~w(--mode full --candidates 3), ~r/--candidates applies to --mode targeted/},
          {:leaks, ~w(--mode full --idle-ms 3),
           ~r/--idle-ms applies to --mode targeted and dry_run/},
          {:leaks, ["--workers", "0"], ~r/--workers must be an integer in 1..1024, got: 0/},
          {:top, ["--workers", "1025"], ~r/--workers must be an integer in 1..1024/}
        ] do
      assert {:error, m} = CLI.parse(task, argv)
      assert m =~ msg
    end

    assert CLI.parse(:leaks, ["--help"]) == :help
    # --help wins over anything else on the line.
    assert CLI.parse(:top, ["--limit", "0", "--help"]) == :help

    # The help text warns that a cookie on the command line is public, and says what else works.
    help = CLI.common_help()
    assert help =~ "/proc/PID/cmdline" and help =~ "BINSCOPE_COOKIE" and help =~ "--cookie-file"
    assert {:ok, %{workers: 2, detail: :basic}} = CLI.parse(:top, ~w(--workers 2 --detail basic))
  end

  test "each task prints a table, JSON or CSV on stdout, with status 0" do
    {0, out, _} = run(:memory, [])
    assert out =~ "category" and out =~ "store_live_bytes" and out =~ "unaccounted"

    {0, out, _} = run(:top, ["--limit", "3", "--by", "binary_pss", "--format", "csv"])
    [header | rows] = String.split(out, "\r\n", trim: true)
    assert header =~ "pid,name,memory,binary_bytes,binary_pss"
    assert length(rows) == 3

    {0, out, _} = run(:leaks, ["--mode", "dry_run", "--limit", "2", "--format", "json"])
    assert String.starts_with?(out, "[")
    assert out =~ ~s("estimated_bytes") and out =~ ~s("pid": "<0.)

    {0, out, _} = run(:top, ~w(--detail basic --by binary_uss --limit 2 --format csv))
    assert length(String.split(out, "\r\n", trim: true)) == 3

    # --detail reaches the scan: basic records have no GC facts (a full-detail field).
    {0, out, _} = run(:top, ~w(--detail basic --workers 1 --limit 1 --format json))
    assert out =~ ~s("binary_pss": )
    refute out =~ ~s("minor_gcs")
    {0, out, _} = run(:top, ~w(--limit 1 --format json))
    assert out =~ ~r/"minor_gcs": \d+/

    {0, out, _} = run(:top, ["--help"])
    assert out == "HELP TEXT\n"
  end

  test "errors go to stderr with status 1" do
    {1, "", err} = run(:top, ["--by", "nope"])
    assert err =~ "error: --by must be one of"
  end

  test "the mix task exits non-zero on error" do
    capture_io(:stderr, fn ->
      assert catch_exit(Mix.Tasks.Binscope.Top.run(["--limit", "-1"])) == {:shutdown, 1}
    end)
  end

  describe "against a node with its own cookie" do
    setup do
      Cluster.distribute!()
      cookie = "sekrit#{System.unique_integer([:positive])}"
      {peer, node} = Cluster.start_peer(cookie: String.to_atom(cookie))
      file = Path.join(System.tmp_dir!(), "binscope_cookie_#{System.unique_integer([:positive])}")
      File.write!(file, cookie <> "\n")

      on_exit(fn ->
        File.rm(file)
        Cluster.stop_peer(peer)
      end)

      %{node: Atom.to_string(node), cookie: cookie, cookie_file: file}
    end

    test "--cookie-file connects; the cookie never appears in the output", c do
      {0, out, err} =
        run(:top, ["--node", c.node, "--cookie-file", c.cookie_file, "--limit", "2"])

      # The table names the node once and prints pids as that node sees them.
      assert out =~ "node: #{c.node}\npid" and out =~ "<0."
      refute out =~ "#PID<"
      refute out =~ c.cookie
      refute err =~ c.cookie

      {0, out, _} = run(:memory, ["--node", c.node, "--cookie", c.cookie, "--format", "json"])
      assert out =~ ~s("node": "#{c.node}")
      refute out =~ c.cookie
    end

    test "a wrong cookie fails clearly, without printing the cookie", c do
      other = Path.join(System.tmp_dir!(), "binscope_wrong_cookie")
      File.write!(other, "wrong_cookie_value")
      # A fresh node name: a node already connected with the right cookie would stay connected.
      {peer, node} = Cluster.start_peer(cookie: :yet_another_cookie)
      {1, out, err} = run(:memory, ["--node", Atom.to_string(node), "--cookie-file", other])
      assert out == ""
      assert err =~ "#{node} refused the connection"
      refute err =~ "wrong_cookie_value"
      File.rm(other)
      :peer.stop(peer)
      _ = c
    end

    test "a missing cookie file is a clear error", c do
      {1, _, err} = run(:memory, ["--node", c.node, "--cookie-file", "/nonexistent/cookie"])
      assert err =~ "cannot read cookie file /nonexistent/cookie"
    end
  end
end
