# Where Binscope is developed (`make test`, `make demo`): the library and its lab.
# Apps depend on the repository root's mix.exs instead (the library alone); both read
# build/project.exs. The NIF is built by our own Mix compiler (no hex `rustler` package here).
Code.require_file("build/project.exs", __DIR__)
Code.require_file("build/compile.binscope_native.exs", __DIR__)

defmodule Binscope.MixProject do
  use Mix.Project

  def project do
    Binscope.Build.Project.config(".", lab: Mix.env() != :prod)
  end

  def application, do: Binscope.Build.Project.application()
end
