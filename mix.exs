# Binscope as a dependency: `{:binscope, git: URL}` (optionally `tag:`/`ref:`) reads this file.
# It builds the library alone (mix_project/lib and src, and the NIF from native/): no demos,
# benchmarks or charts, in any environment. Development happens in mix_project/ (see README).
Code.require_file("mix_project/build/project.exs", __DIR__)
Code.require_file("mix_project/build/compile.binscope_native.exs", __DIR__)

defmodule Binscope.DependencyProject do
  use Mix.Project

  def project, do: Binscope.Build.Project.config("mix_project", lab: false)

  def application, do: Binscope.Build.Project.application()
end
