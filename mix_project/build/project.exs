defmodule Binscope.Build.Project do
  @moduledoc false
  # The one definition of the :binscope Mix project, shared by the two mix.exs files:
  #
  #   * mix_project/mix.exs, where Binscope is developed: the library plus its lab (lab/: demos,
  #     benchmarks, charts and the lab NIF) in dev and test;
  #   * mix.exs at the repository root, what `{:binscope, git: URL}` reads: the library alone,
  #     whatever the environment, so an app's release carries no demo, benchmark or chart code.

  @version "0.1.0"

  @doc "The project keyword list, for sources under `dir` (relative to the mix.exs)."
  def config(dir, opts) do
    lab? = Keyword.fetch!(opts, :lab)
    paths = fn list -> Enum.map(list, &Path.join(dir, &1)) end
    lib = if lab?, do: ["lib", "lab"], else: ["lib"]
    lib = if lab? and Mix.env() == :test, do: lib ++ ["test/support"], else: lib

    [
      app: :binscope,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:binscope_native | Mix.compilers()],
      elixirc_paths: paths.(lib),
      erlc_paths: paths.(["src"]),
      # The collector's records (include/binscope_collector.hrl), read by Binscope.Collector too.
      erlc_include_path: Path.join(dir, "include"),
      # Read by the NIF compiler (build/compile.binscope_native.exs).
      binscope_native: [
        crates: if(lab?, do: ["binscope_nif", "binscope_lab_nif"], else: ["binscope_nif"])
      ],
      deps: []
    ]
  end

  @doc "The OTP application."
  def application, do: [extra_applications: [:logger]]
end
