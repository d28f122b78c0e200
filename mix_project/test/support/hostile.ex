defmodule Binscope.Hostile do
  @moduledoc """
  A generator of hostile terms for the hardening tests: wrong types, improper lists, deeply nested
  and huge terms, negative, absurd and float sizes, dead, remote and non-pid owners, labels that
  are huge or invalid strings, unknown options.

  `stream/1` yields `{description, fun}` pairs, each a call of a public function with at least one
  hostile argument: every one must raise `ArgumentError` or return `{:error, reason}`; and
  `{description, fun, option}` triples, a numeric option or argument at one of its extremes
  (`extremes/0`: 0, -1, 1 <<< 32, 1 <<< 64 and around, floats, huge): such a value may be valid (the
  call then succeeds), otherwise the `ArgumentError` must name `option`.
  Deterministic for a given seed. Creates no atom while generating (the fixed atoms it uses exist
  at compile time), so the tests can count atoms around it. A PRNG cell in `:atomics` keeps the
  generators free of threaded state.
  """

  import Bitwise

  alias Binscope.Store

  # The numeric options (and top/2's n) of the accounting calls.
  @accounting_numeric [
    {:memory, :timeout},
    {:processes, :timeout},
    {:processes, :workers},
    {:snapshot, :top_shared},
    {:snapshot, :workers},
    {:top, :n},
    {:top, :workers},
    {:leaks, :limit},
    {:leaks, :candidates},
    {:leaks, :idle_ms},
    {:leaks, :workers},
    {:leaks, :timeout}
  ]

  @doc "A remote pid (node `:ghost@nowhere`), made once by rewriting a local pid's encoding."
  def remote_pid do
    # The node atom is encoded inside the pid exactly as on its own (minus the version byte).
    encoded = fn atom ->
      binary_part(:erlang.term_to_binary(atom), 1, byte_size(:erlang.term_to_binary(atom)) - 1)
    end

    local = :erlang.term_to_binary(self())
    :erlang.binary_to_term(:binary.replace(local, encoded.(node()), encoded.(:ghost@nowhere)))
  end

  @doc "A pid that has exited."
  def dead_pid do
    {pid, ref} = spawn_monitor(fn -> :ok end)

    receive do
      {:DOWN, ^ref, :process, ^pid, _} -> pid
    end
  end

  @doc "Any hostile value: none of them is a binary, a valid size, label, owner or option list."
  def term(rand) do
    case uniform(rand, 16) do
      1 -> -uniform(rand, 1 <<< 62)
      2 -> (1 <<< 40) + uniform(rand, 1 <<< 70)
      3 -> uniform(rand, 1000) * 1.5e17
      4 -> improper_list(rand)
      5 -> nested(uniform(rand, 5_000))
      6 -> Enum.to_list(1..uniform(rand, 10_000))
      7 -> {uniform(rand, 10), :tuple, [1]}
      8 -> %{uniform(rand, 10) => :map}
      9 -> make_ref()
      10 -> fn -> :fun end
      11 -> <<uniform(rand, 255)::size(7)>>
      12 -> [{:label, :ok} | :improper]
      13 -> 1.5
      14 -> Enum.at([nil, true, false, :infinity, :ok], uniform(rand, 5) - 1)
      15 -> [unknown_option: 1, label: :x]
      16 -> {:error, :capacity}
    end
  end

  @doc "A hostile label: huge, invalid UTF-8, or not an atom or string at all."
  def label(rand) do
    case uniform(rand, 4) do
      1 -> String.duplicate("L", 256 + uniform(rand, 100_000))
      2 -> <<0xFF, 0xFE, uniform(rand, 255)>>
      3 -> term_not_string(rand)
      4 -> <<"ok", 0xC3>>
    end
  end

  @doc "A hostile owner: dead, remote or not a pid."
  def owner(rand, dead, remote) do
    case uniform(rand, 4) do
      1 -> dead
      2 -> remote
      3 -> term_not_string(rand)
      4 -> "#PID<0.1.0>"
    end
  end

  @doc """
  An endless, deterministic stream of `{description, fun}` calls with hostile arguments. Values
  are generated when a call runs, so a million-call soak holds one term at a time.
  """
  def stream(seed) do
    r = rng(seed)
    dead = dead_pid()
    remote = remote_pid()
    Stream.repeatedly(fn -> call(uniform(r, 24), r, dead, remote) end)
  end

  @doc "A PRNG state for `term/1`, `label/1` and `owner/3`."
  def rng(seed) do
    box = :atomics.new(1, [])
    :atomics.put(box, 1, seed * 2_654_435_761 + 1)
    {:box, box}
  end

  defp call(1, r, _d, _o), do: {"put(term)", fn -> Store.put(term(r)) end}
  defp call(2, r, _d, _o), do: {"put(x, label)", fn -> Store.put("x", label: label(r)) end}
  defp call(3, r, d, o), do: {"put(x, owner)", fn -> Store.put("x", owner: owner(r, d, o)) end}
  defp call(4, r, _d, _o), do: {"put(x, opts)", fn -> Store.put("x", term(r)) end}
  defp call(5, r, _d, _o), do: {"alloc(size)", fn -> Store.alloc(term(r)) end}
  defp call(6, r, _d, _o), do: {"alloc(1, fill)", fn -> Store.alloc(1, fill: bad_fill(r)) end}
  defp call(7, r, d, o), do: {"alloc(1, owner)", fn -> Store.alloc(1, owner: owner(r, d, o)) end}
  defp call(8, r, _d, _o), do: {"intern(term)", fn -> Store.intern(term(r)) end}
  defp call(9, r, _d, _o), do: {"intern(x, label)", fn -> Store.intern("x", label: label(r)) end}
  defp call(10, r, _d, _o), do: {"live(opts)", fn -> Store.live(term(r)) end}
  defp call(11, r, _d, _o), do: {"live(label)", fn -> Store.live(label: label(r)) end}
  defp call(12, r, _d, _o), do: {"live(older_than)", fn -> Store.live(older_than: bad_int(r)) end}

  defp call(13, r, _d, _o),
    do: {"set_capacity(term)", fn -> Store.set_capacity(bad_capacity(r)) end}

  defp call(14, r, _d, _o), do: {"put!(term)", fn -> Store.put!(term(r)) end}

  # Inspection: Binscope's functions and the mix tasks' option parsing.
  defp call(15, r, _d, _o), do: {"memory(opts)", fn -> Binscope.memory(term(r)) end}
  defp call(16, r, _d, _o), do: {"processes(opts)", fn -> Binscope.processes(term(r)) end}

  defp call(17, r, d, _o),
    do: {"processes(pids:)", fn -> Binscope.processes(pids: [d, term(r)]) end}

  defp call(18, r, _d, _o), do: {"top(n, opts)", fn -> Binscope.top(bad_int(r), by: :memory) end}
  defp call(19, r, _d, _o), do: {"top(3, by:)", fn -> Binscope.top(3, by: term(r)) end}
  defp call(20, r, _d, _o), do: {"leaks(opts)", fn -> Binscope.leaks(bad_leak_opts(r)) end}

  defp call(21, r, _d, _o),
    do: {"snapshot(opts)", fn -> Binscope.snapshot(top_shared: term(r)) end}

  defp call(22, r, _d, _o) do
    task = Enum.at([:memory, :top, :leaks], uniform(r, 3) - 1)
    {"CLI.parse(#{task})", fn -> Binscope.CLI.parse(task, bad_argv(r)) end}
  end

  # Every numeric option or argument of Binscope.Store and of the accounting calls at one of its
  # extremes. Accounting calls target a node that does not exist, so a value that passes
  # validation costs one {:error, _} instead of a scan.
  defp call(23, r, _d, _o) do
    x = extreme(r)

    case uniform(r, 7) do
      1 -> {"alloc(#{short(x)})", fn -> Store.alloc(x) end, "size"}
      2 -> {"alloc(1, fill: #{short(x)})", fn -> Store.alloc(1, fill: x) end, "fill"}
      3 -> {"live(limit: #{short(x)})", fn -> Store.live(limit: x) end, "limit"}
      4 -> {"live(older_than: #{short(x)})", fn -> Store.live(older_than: x) end, "older_than"}
      5 -> {"alloc!(#{short(x)})", fn -> Store.alloc!(x) end, "size"}
      6 -> {"live(limit, older_than)", fn -> Store.live(limit: x, older_than: x) end, ""}
      7 -> {"set_capacity(#{short(x)})", fn -> capacity(x) end, "capacity"}
    end
  end

  defp call(24, r, _d, _o) do
    x = extreme(r)
    key = Enum.at(@accounting_numeric, uniform(r, length(@accounting_numeric)) - 1)

    case key do
      {:top, :n} ->
        {"top(#{short(x)})", fn -> Binscope.top(x, node: :ghost@nowhere) end, "n"}

      {:top, opt} ->
        {"top(3, #{opt}: #{short(x)})",
         fn -> Binscope.top(3, [{opt, x}, node: :ghost@nowhere]) end, "#{inspect(opt)}"}

      {fun, opt} ->
        {"#{fun}(#{opt}: #{short(x)})",
         fn -> apply(Binscope, fun, [[{opt, x}, node: :ghost@nowhere]]) end, "#{inspect(opt)}"}
    end
  end

  @doc "Numeric extremes: bounds of 32- and 64-bit integers on either side, floats, huge."
  def extremes do
    [
      0,
      -1,
      1,
      (1 <<< 32) - 1,
      1 <<< 32,
      (1 <<< 63) - 1,
      1 <<< 63,
      (1 <<< 64) - 1,
      1 <<< 64,
      -(1 <<< 64),
      1 <<< 200,
      0.0,
      1.0,
      -1.0,
      1.0e308
    ]
  end

  defp extreme(r), do: Enum.at(extremes(), uniform(r, length(extremes())) - 1)

  # A valid capacity would stay set for the calls that follow: put the default back.
  defp capacity(x) do
    Store.set_capacity(x)
  after
    Store.set_capacity(:infinity)
  end

  defp short(x), do: inspect(x, limit: 4)

  defp bad_leak_opts(r) do
    case uniform(r, 6) do
      1 -> [mode: term(r)]
      2 -> [limit: term(r)]
      3 -> [candidates: term(r), mode: :dry_run]
      4 -> [nodes: term(r)]
      # Always invalid: a valid idle_ms would make the call wait (up to a minute).
      5 -> [idle_ms: bad_window(r), mode: :dry_run]
      6 -> [workers: bad_int(r), mode: :dry_run]
    end
  end

  # Always invalid: a random valid-looking prefix, then one bad element.
  defp bad_argv(r) do
    prefix =
      Enum.take([["--limit", "5"], ["--format", "json"], ["--timeout", "100"]], uniform(r, 3) - 1)

    bad =
      case uniform(r, 10) do
        1 ->
          ["--by", random_string(r)]

        2 ->
          ["--limit", Enum.at(["-3", "0", "1e9", "x", "99999999999999999999"], uniform(r, 5) - 1)]

        3 ->
          [
            "--node",
            Enum.at(
              ["no_at_sign", String.duplicate("n", 300) <> "@h", "a@b@c", ""],
              uniform(r, 4) - 1
            )
          ]

        4 ->
          ["--format", random_string(r)]

        5 ->
          ["--" <> random_string(r)]

        6 ->
          [term(r)]

        7 ->
          ["--cookie", random_string(r)]

        8 ->
          ["positional" <> random_string(r)]

        9 ->
          ["--mode", random_string(r)]

        10 ->
          ["--node", "a@b", "--cookie", "c", "--cookie-file", "/nonexistent"]
      end

    List.flatten(prefix) ++ bad
  end

  defp random_string(r) do
    case uniform(r, 3) do
      1 -> String.duplicate("z", uniform(r, 5_000))
      2 -> <<0xFF, uniform(r, 255), 0xC3>>
      3 -> "x#{uniform(r, 1_000_000)}"
    end
  end

  defp bad_fill(r), do: Enum.at([-1, 256, 1 <<< 64, 1.0, "7", nil], uniform(r, 6) - 1)
  defp bad_window(r), do: Enum.at([-1, 60_001, 1 <<< 64, 0.5, "50", :soon], uniform(r, 6) - 1)
  defp bad_int(r), do: Enum.at([-1, -(1 <<< 70), 2.5, "1", :x, [1]], uniform(r, 6) - 1)
  defp bad_capacity(r), do: Enum.at([-1, 1 <<< 64, 1.0, :unlimited, "10", nil], uniform(r, 6) - 1)

  defp term_not_string(r) do
    case term(r) do
      bin when is_binary(bin) -> 42
      atom when is_atom(atom) -> 42
      other -> other
    end
  end

  defp improper_list(r), do: Enum.reduce(1..uniform(r, 50), :tail, &[&1 | &2])
  defp nested(depth), do: Enum.reduce(1..depth, [], fn i, acc -> [i, acc] end)

  # A 64-bit LCG over an atomics cell (quality is irrelevant here; determinism is what matters).
  defp uniform({:box, box}, n) do
    x = :atomics.get(box, 1)
    x = rem(x * 6_364_136_223_846_793_005 + 1_442_695_040_888_963_407, 1 <<< 63)
    :atomics.put(box, 1, x)
    rem(x >>> 17, n) + 1
  end
end
