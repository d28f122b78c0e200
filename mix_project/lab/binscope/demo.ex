defmodule Binscope.Demo do
  @moduledoc """
  The demo tour: each demo shows one fact of the BEAM's memory model with measured numbers.

  A demo module implements this behaviour. `run/1` does the work and returns plain data (the
  ExUnit tests assert on exactly that data, so demo and proof cannot drift apart); `render/1`
  turns it into text for the console.

  Run one with `mix binscope.demo NAME`, or the whole tour with `mix binscope.demo` (`make demo`).
  """

  @doc "The demo's short name, used on the command line."
  @callback name() :: atom()
  @doc "One line saying what the demo shows."
  @callback title() :: String.t()
  @doc "Runs the demo and returns its measured results."
  @callback run(keyword()) :: map()
  @doc "Renders a result of `run/1` for the console."
  @callback render(map()) :: iodata()

  @demos [
    Binscope.Demo.Heaps,
    Binscope.Demo.Binaries,
    Binscope.Demo.StoreLifecycle,
    Binscope.Demo.Lifetimes,
    Binscope.Demo.ManualGc,
    Binscope.Demo.Hibernate,
    Binscope.Demo.GcPressure,
    Binscope.Demo.SubBinary,
    Binscope.Demo.Tuning
  ]

  @doc "The demo modules, in tour order."
  @spec demos() :: [module()]
  def demos, do: @demos

  @doc "Finds a demo by name (a string from the command line); never creates an atom."
  @spec find(String.t()) :: {:ok, module()} | {:error, :unknown_demo}
  def find(name) when is_binary(name) do
    case Enum.find(@demos, &(Atom.to_string(&1.name()) == name)) do
      nil -> {:error, :unknown_demo}
      mod -> {:ok, mod}
    end
  end

  @doc "Runs one demo and prints its title and rendering; returns the result."
  @spec run(module(), keyword()) :: map()
  def run(mod, opts \\ []) do
    IO.puts(["\n== ", Atom.to_string(mod.name()), ": ", mod.title(), " =="])
    result = mod.run(opts)
    IO.write(mod.render(result))
    result
  end

  @doc "Runs every demo in order."
  @spec tour(keyword()) :: [map()]
  def tour(opts \\ []), do: Enum.map(@demos, &run(&1, opts))

  @doc """
  Parses `mix binscope.demo`'s arguments: `:tour` (none), `:list`, `:help`, `{:demo, module}`,
  or `{:error, message}` naming what is valid. Creates no atom.

      iex> Binscope.Demo.parse_argv(["--list"])
      :list
      iex> {:error, ~s(unknown demo "nope"; the demos: ) <> _} = Binscope.Demo.parse_argv(["nope"])
  """
  @spec parse_argv([String.t()]) ::
          :tour | :list | :help | {:demo, module()} | {:error, String.t()}
  def parse_argv(argv) when is_list(argv) do
    names = Enum.map_join(demos(), ", ", &Atom.to_string(&1.name()))
    usage = "usage: mix binscope.demo [NAME | --list | --help]"

    cond do
      not Enum.all?(argv, &is_binary/1) ->
        {:error, "arguments must be strings"}

      "--help" in argv or "-h" in argv ->
        :help

      true ->
        case argv do
          [] ->
            :tour

          ["--list"] ->
            :list

          ["-" <> _ = opt] ->
            {:error, "unknown option #{Binscope.CLI.quote_switch(opt)}; #{usage}"}

          [name] ->
            case find(name) do
              {:ok, mod} ->
                {:demo, mod}

              {:error, :unknown_demo} ->
                {:error, "unknown demo #{Binscope.CLI.quote_arg(name)}; the demos: #{names}"}
            end

          _ ->
            {:error, "give at most one demo name or option; #{usage}; the demos: #{names}"}
        end
    end
  end
end
