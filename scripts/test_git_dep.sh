#!/usr/bin/env bash
# Proves that Binscope works as a git dependency of a fresh app, as a user adds it:
#   {:binscope, git: URL}            and            {:binscope, git: URL, tag: TAG}
# URL is a file:// clone of this checkout's HEAD (a bare copy, so uncommitted files are not
# used). Each app compiles, calls Binscope.Store.put/2, Binscope.leaks/1 and Binscope.top/2, and
# checks that no demo, benchmark or chart code came with the dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d /tmp/binscope-gitdep.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR="$work/target"   # shared by both apps: the NIF is built once
export MIX_ENV=dev

git clone -q --bare "$repo" "$work/binscope.git"
git -C "$work/binscope.git" update-ref refs/heads/main "$(git rev-parse HEAD)"
git -C "$work/binscope.git" symbolic-ref HEAD refs/heads/main
git -C "$work/binscope.git" tag ci-git-dep "$(git rev-parse HEAD)"
url="file://$work/binscope.git"

check='
{:ok, bin} = Binscope.Store.put(:binary.copy("x", 100_000))
100_000 = byte_size(bin)
{:ok, leaks} = Binscope.leaks()
true = is_list(leaks)
{:ok, [_, _]} = Binscope.top(2)
for m <- [Binscope.Demo, Binscope.Bench, Binscope.Chart, Binscope.Lab.Native],
    do: false = Code.ensure_loaded?(m)
["libbinscope_nif.so"] = Path.wildcard(Application.app_dir(:binscope, "priv/native/*.so")) |> Enum.map(&Path.basename/1)
IO.puts("git dependency OK: put/2, leaks/1 and top/2 ran; no lab code shipped")
'

for spec in "git: \"$url\"" "git: \"$url\", tag: \"ci-git-dep\""; do
  echo "== {:binscope, $spec}"
  app="$work/app$RANDOM"
  (cd "$work" && mix new "$(basename "$app")" >/dev/null)
  sed -i "s|# {:dep_from_git.*|{:binscope, $spec}|" "$app/mix.exs"
  grep -q "{:binscope, $spec}" "$app/mix.exs"
  (cd "$app" && mix deps.get >/dev/null && mix compile >"$work/compile.log" 2>&1 || { tail -40 "$work/compile.log"; exit 1; })
  (cd "$app" && mix run -e "$check")
done
