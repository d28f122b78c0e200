defmodule Binscope.OptionsTest do
  # Options, defaults and limits are written once (Binscope.Accounting.Options): the API's
  # checks, the mix tasks' parsers, their help and the docs all read the same schema.
  use ExUnit.Case, async: true

  alias Binscope.Accounting.Options, as: API
  alias Binscope.CLI

  test "a limit is the same on the command line and in the API" do
    assert {:ok, %{candidates: 1_000_000}} = CLI.parse(:leaks, ~w(--candidates 1000000))
    assert {:error, msg} = CLI.parse(:leaks, ~w(--candidates 1000001))
    assert msg =~ "1..1000000"

    assert_raise ArgumentError, ~r/:candidates must be an integer in 1..1_000_000/, fn ->
      Binscope.leaks(candidates: 1_000_001, mode: :dry_run)
    end

    # Every flag that is an API option takes exactly the API's values.
    for task <- [:memory, :top, :leaks],
        {name, spec} <- CLI.Options.schema(task),
        {^name, api} <- API.schema(task) do
      assert spec.type == api.type or {spec.type, api.type} == {:node_name, :node}
      assert Map.get(spec, :default) == Map.get(api, :default)
    end
  end

  test "validated options carry every default of the call's schema" do
    o = API.validate!(:leaks, [])
    assert %{mode: :targeted, limit: 10, candidates: 20, idle_ms: 50, workers: :auto} = o
    assert o.timeout == 30_000
    refute Map.has_key?(o, :node)
    assert API.validate!(:rollup, []).by == :application
    assert API.validate!(:top, by: :binary_pss).by == :binary_pss
  end

  test "each task's help lists every flag once, one per line, its default, in 80 columns" do
    for task <- [:memory, :top, :leaks] do
      help = CLI.help(task)
      lines = String.split(help, "\n")

      for line <- lines do
        assert String.length(line) <= 80, "binscope.#{task}: #{inspect(line)}"
      end

      for {name, spec} <- CLI.Options.schema(task) do
        head = Map.get(spec, :flag) || CLI.Options.flag(name)
        starts = Enum.filter(lines, &String.starts_with?(&1, "    " <> head <> " "))
        assert length(starts) == 1, "binscope.#{task}: #{head} on #{length(starts)} lines"

        if Map.has_key?(spec, :default) do
          [first] = starts
          i = Enum.find_index(lines, &(&1 == first))
          # The entry: its line and the continuation lines under its doc column.
          rest = lines |> Enum.drop(i + 1) |> Enum.take_while(&String.starts_with?(&1, "      "))
          entry = Enum.join([first | rest], " ")
          assert entry =~ "default ", "binscope.#{task}: #{head}: #{entry}"
        end
      end

      # The mix task's own docs are that help.
      mod = Module.concat(Mix.Tasks.Binscope, task |> Atom.to_string() |> Macro.camelize())
      {:docs_v1, _, _, _, %{"en" => moduledoc}, _, _} = Code.fetch_docs(mod)
      assert moduledoc =~ help

      # `--help` prints the moduledoc as it is: all of it fits in 80 columns.
      for line <- String.split(moduledoc, "\n") do
        assert String.length(line) <= 80, "mix binscope.#{task} --help: #{inspect(line)}"
      end
    end

    assert CLI.Options.default(:top, :limit) == 20
    assert CLI.Options.default(:leaks, :limit) == 10
  end

  test "the API docs list each call's options from the schema" do
    {:docs_v1, _, _, _, _, _, docs} = Code.fetch_docs(Binscope)

    for call <- API.calls() do
      arity = if call == :top, do: 2, else: 1
      [doc] = for {{:function, ^call, ^arity}, _, _, %{"en" => d}, _} <- docs, do: d
      assert doc =~ API.doc(call), "Binscope.#{call}/#{arity}"

      for {name, spec} <- API.schema(call) do
        [line] = Enum.filter(String.split(doc, "\n"), &String.starts_with?(&1, "  * `#{name}:`"))
        if Map.has_key?(spec, :default), do: assert(line =~ "default `")
      end
    end
  end
end
