defmodule Binscope.Hardening.CLIHostileTest do
  # The mix tasks' command lines under hostile input: odd and oversized cookies never printed,
  # connection failures told apart within --timeout, and every pair of flags of every task with
  # valid and invalid values: one `error:` line naming what is valid, no stack trace, no atom.
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO

  alias Binscope.{CLI, Cluster}

  @moduletag timeout: 300_000

  defp run(task, argv), do: Binscope.CLIRun.run(task, argv)

  # One line, `error: ...`, nothing that looks like an exception or a stack trace.
  defp assert_error_line(err, context) do
    lines = String.split(err, "\n", trim: true) |> Enum.reject(&(&1 =~ ~r/^binscope: /))
    assert [line] = lines, "#{context}: expected one error line, got: #{inspect(err)}"
    assert String.starts_with?(line, "error: "), "#{context}: #{inspect(line)}"
    refute line =~ ~r/\*\*|stacktrace|\(elixir|\(stdlib|\(kernel|Error\)/, "#{context}: #{line}"
    line
  end

  # The cookie, or any 12-byte piece of it (a truncated echo would leak too), is nowhere.
  defp refute_leak(text, cookie, context) do
    pieces =
      if byte_size(cookie) <= 12,
        do: [cookie],
        else: for(i <- 0..(byte_size(cookie) - 12)//6, do: binary_part(cookie, i, 12))

    for p <- pieces, p != "" do
      refute :binary.match(text, p) != :nomatch,
             "#{context}: the cookie appears in #{inspect(text, limit: 20)}"
    end
  end

  defp tmp(name, content) do
    path = Path.join(System.tmp_dir!(), "binscope_#{name}_#{System.unique_integer([:positive])}")
    File.write!(path, content)
    on_exit(fn -> File.rm(path) end)
    path
  end

  defp stop(peer), do: Cluster.stop_peer(peer)

  # Cookies no OTP node can have, each with a distinctive text to look for.
  defp odd_cookies do
    # (No NUL: an environment variable cannot hold one; the NUL case is below.)
    junk = for <<b <- :crypto.strong_rand_bytes(64)>>, b != 0, into: "", do: <<b>>

    [
      {"empty", ""},
      {"non-ASCII", "caf\u00e9-S3CRET-non-ascii-cookie"},
      {"newline inside", "S3CRET-first-line\nS3CRET-second-line"},
      {"NUL inside", "S3CRET-before\0S3CRET-after"},
      {"256 chars", "S3CRET" <> String.duplicate("k", 250)},
      {"300 chars", "S3CRET" <> String.duplicate("q", 294)},
      {"10k chars", "S3CRET" <> String.duplicate("z", 10_000)},
      {"binary junk", "S3CRET" <> junk},
      {"tab inside", "S3CRET\tS3CRET-tab"}
    ]
  end

  defp check_odd_cookies(c) do
    for {what, cookie} <- odd_cookies(),
        source <- [:arg, :file, :env],
        source != :env or not String.contains?(cookie, "\0") do
      context = "#{what} from #{source}"

      argv =
        case source do
          :arg -> ["--node", c.node, "--cookie", cookie]
          :file -> ["--node", c.node, "--cookie-file", tmp("odd_cookie", cookie)]
          :env -> ["--node", c.node]
        end

      # (As the OS would hand it over: each byte one character.)
      if source == :env, do: :os.putenv(~c"BINSCOPE_COOKIE", :binary.bin_to_list(cookie))

      {status, out, err} =
        try do
          run(:memory, argv)
        after
          System.delete_env("BINSCOPE_COOKIE")
        end

      # An empty BINSCOPE_COOKIE is set but empty: refused like the others.
      assert status == 1, "#{context}: status #{status}"
      assert out == ""
      line = assert_error_line(err, context)
      assert line =~ "cookie", context
      assert line =~ "1 to 255 printable ASCII characters" or line =~ "empty", context
      refute_leak(out <> err, cookie, context)
    end
  end

  describe "cookies" do
    setup do
      Cluster.distribute!()
      cookie = "Right-S3CRET-#{System.unique_integer([:positive])}"
      {peer, node} = Cluster.start_peer(cookie: String.to_atom(cookie))
      on_exit(fn -> stop(peer) end)
      %{node: Atom.to_string(node), cookie: cookie}
    end

    test "odd and oversized cookies, from --cookie, a file or BINSCOPE_COOKIE: one clear line, never the cookie",
         c do
      # Twice: the first pass loads the code of every path (which makes atoms), the second may
      # make none.
      check_odd_cookies(c)
      atoms = :erlang.system_info(:atom_count)
      check_odd_cookies(c)
      assert :erlang.system_info(:atom_count) == atoms
    end

    test "the checker's messages never hold the cookie" do
      for {what, cookie} <- odd_cookies() do
        assert {:error, msg} = CLI.check_cookie(cookie, "test")
        refute_leak(msg, cookie, what)
      end

      assert :ok = CLI.check_cookie(String.duplicate("a", 255), "test")
      assert :ok = CLI.check_cookie("with spaces ~!@#", "test")
    end

    test "--cookie is kept out of every other message, even when it looks like an option", c do
      for argv <- [
            ["--cookie", "--S3CRET-looks-like-a-flag", "--node", c.node, "--limit", "x"],
            ["--cookie=S3CRET-with-equals", "--bogus"],
            ["--cookie", "S3CRET-then-junk", "junk-positional"],
            ["--cookie", "S3CRET-twice", "--cookie", "S3CRET-twice-again"],
            ["--node", c.node, "--cookie"]
          ] do
        {1, "", err} = run(:top, argv)
        assert_error_line(err, inspect(argv))
        refute err =~ "S3CRET"
      end

      # Printing parsed options does not show it either.
      {:ok, opts} = CLI.parse(:memory, ["--node", c.node, "--cookie", "S3CRET-kept-in-a-fun"])
      refute inspect(opts) =~ "S3CRET"
      assert opts.cookie.() == "S3CRET-kept-in-a-fun"
    end

    test "the right cookie from BINSCOPE_COOKIE, a file (with a final newline) or --cookie", c do
      System.put_env("BINSCOPE_COOKIE", c.cookie)

      try do
        {0, out, err} = run(:memory, ["--node", c.node, "--format", "json"])
        assert out =~ ~s("node": "#{c.node}")
        refute_leak(out <> err, c.cookie, "env")
      after
        System.delete_env("BINSCOPE_COOKIE")
      end

      file = tmp("cookie", c.cookie <> "\n")
      {0, out, err} = run(:memory, ["--node", c.node, "--cookie-file", file])
      refute_leak(out <> err, c.cookie, "file")

      # --cookie-file and --cookie win over the environment.
      System.put_env("BINSCOPE_COOKIE", "Wrong-S3CRET")

      try do
        assert {:ok, f} = Binscope.CLI.Connect.cookie(%{node: c.node, cookie_file: file})
        assert f.() == c.cookie
        assert {:ok, f} = Binscope.CLI.Connect.cookie(%{node: c.node, cookie: fn -> "arg" end})
        assert f.() == "arg"
        assert {:ok, f} = Binscope.CLI.Connect.cookie(%{node: c.node})
        assert f.() == "Wrong-S3CRET"
      after
        System.delete_env("BINSCOPE_COOKIE")
      end

      assert {:ok, nil} = Binscope.CLI.Connect.cookie(%{node: c.node})
    end

    test "a cookie of 255 characters works; cookie files that are no files fail clearly" do
      long = "L" <> String.duplicate("5", 254)
      {peer, node} = Cluster.start_peer(cookie: String.to_atom(long))
      file = tmp("long_cookie", long)
      {0, out, _} = run(:memory, ["--node", Atom.to_string(node), "--cookie-file", file])
      assert out =~ Atom.to_string(node)
      stop(peer)

      big = tmp("big_cookie", "S3CRET" <> String.duplicate("b", 100_000))

      dir =
        Path.join(System.tmp_dir!(), "binscope_cookie_dir_#{System.unique_integer([:positive])}")

      File.mkdir_p!(dir)

      for {f, msg} <- [
            {big, "larger than 65536 bytes"},
            {dir, "not a regular file"},
            {"/dev/zero", "not a regular file"},
            {"/nonexistent/cookie", "cannot read cookie file /nonexistent/cookie"}
          ] do
        {1, "", err} = run(:memory, ["--node", "x@127.0.0.1", "--cookie-file", f])
        line = assert_error_line(err, f)
        assert line =~ msg
        refute err =~ "S3CRET"
      end

      File.rm_rf!(dir)
    end

    test "mix binscope.memory with a 300-character cookie file: one line, no stack trace, no cookie",
         c do
      cookie = "S3CRET" <> String.duplicate("x", 294)
      file = tmp("mix_cookie", cookie)

      {out, status} =
        System.cmd("mix", ["binscope.memory", "--node", c.node, "--cookie-file", file],
          stderr_to_stdout: true,
          env: [{"MIX_ENV", "test"}]
        )

      assert status == 1
      refute_leak(out, cookie, "mix task")
      assert out =~ "error: the cookie from cookie file #{file} is 300 bytes long"
      refute out =~ "**"
    end
  end

  describe "connection failures are told apart, within --timeout" do
    setup do
      Cluster.distribute!()
      :ok
    end

    test "no such name at the host: epmd says so" do
      name = "nobody#{System.unique_integer([:positive])}@127.0.0.1"
      {1, "", err} = run(:memory, ["--node", name, "--timeout", "3000"])

      assert assert_error_line(err, name) =~
               ~r/no node named nobody\d+ at 127.0.0.1 \(epmd there lists: /
    end

    test "no host: epmd cannot be reached" do
      {1, "", err} = run(:memory, ["--node", "x@nonexistent.invalid", "--timeout", "3000"])
      assert assert_error_line(err, "no host") =~ "cannot reach epmd at nonexistent.invalid"
    end

    test "a wrong cookie: the node is up and refuses" do
      {peer, node} = Cluster.start_peer(cookie: :"the-R1GHT-cookie")
      file = tmp("wrong", "Wrong-S3CRET-value")
      {1, "", err} = run(:memory, ["--node", Atom.to_string(node), "--cookie-file", file])
      line = assert_error_line(err, "wrong cookie")
      assert line =~ "#{node} refused the connection" and line =~ "cookie is wrong"
      refute err =~ "S3CRET" or err =~ "R1GHT"
      stop(peer)
    end

    test "a stopped node: --timeout bounds the connection step" do
      {peer, node} = Cluster.start_peer(cookie: :stopped_node_cookie)
      os_pid = :peer.call(peer, :os, :getpid, [])
      {_, 0} = System.cmd("kill", ["-STOP", to_string(os_pid)])

      try do
        {us, {1, "", err}} =
          :timer.tc(fn ->
            run(:memory, [
              "--node",
              Atom.to_string(node),
              "--cookie",
              "stopped_node_cookie",
              "--timeout",
              "1500"
            ])
          end)

        ms = div(us, 1000)
        IO.puts("\nstopped node, --timeout 1500: error after #{ms} ms")

        assert assert_error_line(err, "stopped") =~
                 "did not complete the connection within the timeout"

        assert ms < 1500 + 300
      after
        System.cmd("kill", ["-CONT", to_string(os_pid)])
        stop(peer)
      end
    end
  end

  # Every flag of every task: a valid and some invalid values, and what a message about an
  # invalid one must name (the valid values).
  @values %{
    node:
      {["x@127.0.0.1"], ["no_at_sign", String.duplicate("n", 300) <> "@h", "a@b@c", ""],
       "name@host"},
    cookie:
      {["a-cookie"], ["", "caf\u00e9", String.duplicate("c", 256)], "1 to 255 printable ASCII"},
    cookie_file: {["/nonexistent/cookie"], [""], "file name"},
    format: {["csv"], ["xml", ""], "csv, json, table"},
    timeout: {["5000"], ["0", "-1", "x", "3600001", "99999999999999999999999"], "1..3600000"},
    help: {[nil], ["yes"], "no value"},
    limit: {["3"], ["0", "1e9", "-3"], "1..1000000"},
    by: {["binary_pss", "heap_size"], ["nope", "heap size"], "binary_pss"},
    detail: {["full", "basic"], ["all"], "basic, full"},
    workers: {["1"], ["0", "1025"], "1..1024"},
    mode: {["dry_run"], ["all"], "dry_run, full, targeted"},
    candidates: {["5"], ["0", "10000001"], "1..1000000"},
    idle_ms: {["0"], ["-1", "60001"], "0..60000"}
  }

  @task_flags %{
    memory: [:node, :cookie, :cookie_file, :format, :timeout, :help],
    top: [:node, :cookie, :cookie_file, :format, :timeout, :help, :limit, :by, :detail, :workers],
    leaks:
      [:node, :cookie, :cookie_file, :format, :timeout, :help, :limit, :mode, :candidates] ++
        [:idle_ms, :workers]
  }

  defp arg(flag, nil), do: ["--" <> String.replace(Atom.to_string(flag), "_", "-")]

  defp arg(:help, v), do: ["--help=" <> v]
  defp arg(flag, v), do: ["--" <> String.replace(Atom.to_string(flag), "_", "-"), v]

  defp pair_cases(task) do
    flags = Map.fetch!(@task_flags, task)

    for {a, i} <- Enum.with_index(flags),
        b <- Enum.drop(flags, i + 1),
        {va, a_ok} <- values(a),
        {vb, b_ok} <- values(b) do
      {[{a, va, a_ok}, {b, vb, b_ok}], arg(a, va) ++ arg(b, vb)}
    end
  end

  defp values(flag) do
    {valid, invalid, _} = Map.fetch!(@values, flag)
    Enum.map(valid, &{&1, true}) ++ Enum.map(invalid, &{&1, false})
  end

  # A pair of valid values that needs a node is only parsed (no node to connect to here); the
  # others run for real against this VM.
  defp check_pair(task, flags, argv) do
    context = "binscope.#{task} #{inspect(argv, limit: 8, printable_limit: 60)}"
    bad = for {f, _, false} <- flags, do: f

    cond do
      # --help wins over anything else on the line.
      {:help, nil, true} in flags ->
        assert {0, "HELP TEXT\n", ""} = run(task, argv)

      bad == [] ->
        check_valid_pair(task, flags, argv, context)

      true ->
        {status, out, err} = run(task, argv)
        assert status == 1, context
        assert out == "", context
        line = assert_error_line(err, context)
        hints = for f <- bad, do: elem(Map.fetch!(@values, f), 2)

        assert Enum.any?(hints, &String.contains?(line, &1)),
               "#{context}: #{line} names none of #{inspect(hints)}"
    end
  end

  defp check_valid_pair(task, flags, argv, context) do
    needs_node? = Enum.any?(flags, fn {f, _, _} -> f in [:node, :cookie, :cookie_file] end)

    case CLI.parse(task, argv) do
      {:ok, _} when needs_node? ->
        :ok

      {:ok, _} ->
        {status, out, err} = run(task, argv)
        assert status == 0, "#{context}: #{err}"
        assert out != ""

      {:error, msg} ->
        # A combination of valid values that cannot work: the message names the flags.
        {1, "", err} = run(task, argv)
        line = assert_error_line(err, context)
        assert line == "error: " <> msg

        assert Enum.any?(flags, fn {f, _, _} ->
                 line =~ "--" <> String.replace(Atom.to_string(f), "_", "-")
               end),
               context
    end
  end

  test "every pair of flags of binscope.memory, .top and .leaks, valid and invalid" do
    cases = for task <- [:memory, :top, :leaks], c <- pair_cases(task), do: {task, c}
    # Warm up every path once (code loading makes atoms), then count over a second pass.
    Enum.each(cases, fn {task, {flags, argv}} -> check_pair(task, flags, argv) end)
    atoms = :erlang.system_info(:atom_count)
    Enum.each(cases, fn {task, {flags, argv}} -> check_pair(task, flags, argv) end)
    IO.puts("\nmix task flag pairs: #{length(cases)} command lines checked")
    assert :erlang.system_info(:atom_count) == atoms, "atoms were created from the command line"
  end

  test "binscope.demo: every pair of its arguments, and --help" do
    args = ["--list", "--help", "heaps", "nope", "--bogus", "", String.duplicate("d", 5000)]

    for a <- args, b <- args do
      case Binscope.Demo.parse_argv([a, b]) do
        :help -> assert "--help" in [a, b]
        {:error, msg} -> assert msg =~ "usage: mix binscope.demo" or msg =~ "the demos: heaps"
      end
    end

    for a <- args do
      case Binscope.Demo.parse_argv([a]) do
        :list -> assert a == "--list"
        :help -> assert a == "--help"
        {:demo, Binscope.Demo.Heaps} -> assert a == "heaps"
        {:error, msg} -> assert msg =~ "usage:" or msg =~ "the demos: heaps, "
      end
    end

    assert Binscope.Demo.parse_argv([]) == :tour

    out = capture_io(fn -> Mix.Tasks.Binscope.Demo.run(["--help"]) end)
    assert out =~ "mix binscope.demo --list" or out =~ "--list"

    err =
      capture_io(:stderr, fn ->
        assert catch_exit(Mix.Tasks.Binscope.Demo.run(["nope"])) == {:shutdown, 1}
      end)

    assert assert_error_line(err, "demo nope") =~ ~s(unknown demo "nope"; the demos: heaps)
  end
end
