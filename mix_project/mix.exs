# The NIF is built by our own Mix compiler (the hex `rustler` package is not reachable here).
Code.require_file("build/compile.binscope_native.exs", __DIR__)

defmodule Binscope.MixProject do
  use Mix.Project

  def project do
    [
      app: :binscope,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:binscope_native | Mix.compilers()],
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: []
    ]
  end

  def application do
    [extra_applications: [:logger]]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
