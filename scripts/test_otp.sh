#!/usr/bin/env bash
# Runs the README's test command (`make test`) on a newer OTP, inside a Debian root.
#
#   scripts/test_otp.sh 27    # trixie root: OTP 27.3 + Elixir 1.18
#   scripts/test_otp.sh 29    # sid root:    OTP 29.1 + Elixir 1.20
#   (`make test-otp OTP=27`, `make test-matrix` runs 27 then 29; OTP 25 is the host's `make test`)
#
# The root comes from scripts/otp_root.sh (built from scratch when absent, reused when cached).
# What is copied in: the tracked files of this checkout as they are in the working tree
# (`git ls-files`, so uncommitted edits to tracked files are tested too; untracked files,
# target/, _build/ and priv/native are not copied). The copy replaces the previous one, so every
# run starts from a clean tree. Only cargo's build output is kept between runs, in a per-root
# CARGO_TARGET_DIR inside the root (cargo's own fingerprints decide what to rebuild). When that
# cache is empty (a fresh root) it starts as a copy of the host's target dir if there is one:
# the same toolchain (bind-mounted) built it from the same files, so cargo rebuilds only what
# differs, and a fresh machine does not compile everything three times (jemalloc's C part then
# comes from the host's gcc; it links statically and runs on the newer glibc of the roots).
#
# Inside the root the environment is cleared: HOME=/root, PATH with /root/.cargo/bin,
# LANG/LC_ALL=C.UTF-8, and CI passed through when set. Exits with `make test`'s status.
set -euo pipefail

otp=${1:?usage: scripts/test_otp.sh 27|29}
cd "$(dirname "$0")/.."
repo=$(pwd)

command -v git >/dev/null 2>&1 || { echo "test_otp: needs git (the copy is the tracked files)" >&2; exit 1; }
git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
  { echo "test_otp: $repo is not a git checkout" >&2; exit 1; }

root=$(scripts/otp_root.sh "$otp" | tail -n 1)
[ -d "$root" ] || { echo "test_otp: otp_root.sh gave no root" >&2; exit 1; }

# Inside the root: /work/binscope-matrix/src-<checkout> (the copy; one per checkout path, so two
# checkouts can run at once) and /work/binscope-matrix/target (cargo's cache, shared: cargo locks it).
inner=/work/binscope-matrix
src="$inner/src-$(printf '%s' "$repo" | md5sum | cut -c1-12)"
if [ -z "$(ls -A "$root$inner/target" 2>/dev/null)" ]; then
  host_target=${CARGO_TARGET_DIR:-$repo/target}
  mkdir -p "$root$inner/target"
  if [ -d "$host_target" ] && [ -n "$(ls -A "$host_target")" ]; then
    echo "==> test_otp: seeding the root's cargo cache from $host_target" >&2
    cp -a --reflink=auto "$host_target/." "$root$inner/target/"
  fi
fi
rm -rf "${root:?}$src"
scripts/copy_tracked.sh "$repo" "$root$src"
rev=$(git -C "$repo" rev-parse --short HEAD)
dirty=""
git -C "$repo" diff --quiet HEAD -- || dirty=" + uncommitted changes"

envs=(HOME=/root "PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
      LANG=C.UTF-8 LC_ALL=C.UTF-8 "CARGO_TARGET_DIR=$inner/target")
[ -n "${CI:-}" ] && envs+=("CI=$CI")

versions=$(chroot "$root" /usr/bin/env -i "${envs[@]}" /bin/bash -c \
  "erl -noshell -eval 'io:format(\"OTP ~s (ERTS ~s)\", [erlang:system_info(otp_release), erlang:system_info(version)]), halt().' && echo -n ', ' && elixir --version | tail -n 1")
echo "==> test_otp: OTP $otp root $root: $versions"
echo "==> test_otp: checkout $rev$dirty copied to $src; running make test"

log=$(mktemp "/tmp/binscope-test-otp$otp.XXXXXX.log")
set +e
chroot "$root" /usr/bin/env -i "${envs[@]}" /bin/bash -c "cd $src && make test" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# ExUnit's summary lines: "N doctests, M tests, K failures" (Elixir 1.14, 1.18) or
# "Result: ..." and "Failed: ..." (1.20), plus the "Finished in" line.
summary=$(grep -E '^[0-9]+ (doctests?|tests?)|^Result: |^Failed: |^Finished in' "$log" | tr -d '\r' || true)
echo "==> test_otp: OTP $otp ($versions): make test exited $status"
if [ -n "$summary" ]; then
  echo "$summary" | sed 's/^/==> test_otp: OTP '"$otp"': /'
else
  echo "==> test_otp: OTP $otp: no ExUnit summary (mix test did not run; see $log)"
fi
echo "==> test_otp: full log $log"
exit "$status"
