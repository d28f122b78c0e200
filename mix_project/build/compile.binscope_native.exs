defmodule Mix.Tasks.Compile.BinscopeNative do
  @shortdoc "Builds the Binscope NIFs with cargo"
  @moduledoc """
  Builds the project's NIF crates with `cargo build --release` and installs each library as
  `priv/native/lib<crate>.so` of the project being compiled, where its hidden `Native` module
  loads it. The crates come from the project's `binscope_native: [crates: [...]]`
  (build/project.exs): `binscope_nif` always, `binscope_lab_nif` (charts) only with the lab.

  Cargo runs only when a Rust source, a `Cargo.toml` or `Cargo.lock` changed: a fingerprint of
  their contents (and of the crate list) is kept next to the installed libraries.
  `CARGO_TARGET_DIR` is honoured.
  """
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    # The Cargo workspace is the repository root, two levels above this file.
    root = Path.expand("../..", __DIR__)
    crates = Keyword.fetch!(Mix.Project.config()[:binscope_native] || [], :crates)
    priv = Path.expand("priv/native")
    stamp = Path.join(priv, "binscope.fingerprint")
    fingerprint = fingerprint(root, crates)
    installed = Enum.map(crates, &Path.join(priv, "lib#{&1}.so"))

    result =
      if Enum.all?(installed, &File.exists?/1) and File.read(stamp) == {:ok, fingerprint} do
        :noop
      else
        build!(root, crates)
        File.mkdir_p!(priv)
        # A library this project no longer builds (the lab's, in a prod build) must not ship.
        for stale <- Path.wildcard(Path.join(priv, "lib*.so")),
            stale not in installed,
            do: File.rm!(stale)

        for crate <- crates do
          so = Path.join(priv, "lib#{crate}.so")
          # Replace, never overwrite in place: a loaded library must keep its old inode.
          File.rm(so)
          File.cp!(Path.join([target_dir(root), "release", "lib#{crate}.so"]), so)
        end

        File.write!(stamp, fingerprint)
        :ok
      end

    # Without this a clean build has no _build/<env>/lib/binscope/priv and loading fails.
    Mix.Project.build_structure()
    {result, []}
  end

  @impl true
  def clean do
    File.rm_rf!(Path.expand("priv/native"))
    :ok
  end

  defp build!(root, crates) do
    unless System.find_executable("cargo") do
      Mix.raise("cargo was not found on PATH; Binscope's NIF needs a Rust toolchain (see README)")
    end

    packages = Enum.flat_map(crates, &["-p", &1])
    Mix.shell().info("==> binscope: building #{Enum.join(crates, ", ")} (cargo build --release)")

    {_, status} =
      System.cmd("cargo", ["build", "--release" | packages],
        cd: root,
        stderr_to_stdout: true,
        into: IO.stream(:stdio, :line)
      )

    if status != 0, do: Mix.raise("cargo build failed with exit status #{status}")
  end

  defp target_dir(root), do: System.get_env("CARGO_TARGET_DIR") || Path.join(root, "target")

  defp fingerprint(root, crates) do
    files =
      (Path.wildcard(Path.join(root, "native/**/*.{rs,toml}")) ++
         Enum.map(["Cargo.toml", "Cargo.lock"], &Path.join(root, &1)))
      # cargo-fuzz's own workspace and build output are not part of the NIF.
      |> Enum.reject(&String.contains?(&1, "/fuzz/"))

    files
    |> Enum.sort()
    |> Enum.map(fn f -> {Path.relative_to(f, root), File.read(f)} end)
    |> then(&{crates, &1})
    |> :erlang.term_to_binary()
    |> :erlang.md5()
    |> Base.encode16(case: :lower)
  end
end
