defmodule Mix.Tasks.Compile.BinscopeNative do
  @shortdoc "Builds the Binscope NIF with cargo"
  @moduledoc """
  Builds the `binscope_nif` crate with `cargo build --release` and installs the library as
  `priv/native/libbinscope_nif.so`, where `Binscope.Native` loads it.

  Cargo runs only when a Rust source, a `Cargo.toml` or `Cargo.lock` changed: a fingerprint of
  their contents is kept next to the installed library. `CARGO_TARGET_DIR` is honoured.
  """
  use Mix.Task.Compiler

  @lib "libbinscope_nif"

  @impl true
  def run(_args) do
    root = Path.expand("../..", __DIR__)
    priv = Path.expand("../priv/native", __DIR__)
    installed = Path.join(priv, @lib <> ".so")
    stamp = Path.join(priv, @lib <> ".fingerprint")
    fingerprint = fingerprint(root)

    result =
      if File.exists?(installed) and File.read(stamp) == {:ok, fingerprint} do
        :noop
      else
        build!(root)
        File.mkdir_p!(priv)
        # Replace, never overwrite in place: a loaded library must keep its old inode.
        File.rm(installed)
        File.cp!(Path.join([target_dir(root), "release", @lib <> ".so"]), installed)
        File.write!(stamp, fingerprint)
        :ok
      end

    # Without this a clean build has no _build/<env>/lib/binscope/priv and loading fails.
    Mix.Project.build_structure()
    {result, []}
  end

  @impl true
  def clean do
    File.rm_rf!(Path.expand("../priv/native", __DIR__))
    :ok
  end

  defp build!(root) do
    unless System.find_executable("cargo") do
      Mix.raise("cargo was not found on PATH; Binscope's NIF needs a Rust toolchain (see README)")
    end

    Mix.shell().info("==> binscope: building the NIF (cargo build --release -p binscope_nif)")

    {_, status} =
      System.cmd("cargo", ["build", "--release", "-p", "binscope_nif"],
        cd: root,
        stderr_to_stdout: true,
        into: IO.stream(:stdio, :line)
      )

    if status != 0, do: Mix.raise("cargo build failed with exit status #{status}")
  end

  defp target_dir(root), do: System.get_env("CARGO_TARGET_DIR") || Path.join(root, "target")

  defp fingerprint(root) do
    files =
      (Path.wildcard(Path.join(root, "native/**/*.{rs,toml}")) ++
         Enum.map(["Cargo.toml", "Cargo.lock"], &Path.join(root, &1)))
      # cargo-fuzz's own workspace and build output are not part of the NIF.
      |> Enum.reject(&String.contains?(&1, "/fuzz/"))

    files
    |> Enum.sort()
    |> Enum.map(fn f -> {Path.relative_to(f, root), File.read(f)} end)
    |> :erlang.term_to_binary()
    |> :erlang.md5()
    |> Base.encode16(case: :lower)
  end
end
