#!/usr/bin/env bash
# Cross-version remote inspection: Binscope on one OTP inspects a bare node (OTP only: no Binscope,
# no Elixir) on another, over distributed Erlang on loopback with one cookie.
#
#   scripts/test_cross_otp.sh                         # OTP 29 -> 25 and 25 -> 29 (caller:target)
#   CROSS_PAIRS="29:25 25:29 27:25 25:27" scripts/test_cross_otp.sh
#
# The host's OTP (25 on Debian 12) runs on the host; 27 and 29 run in the Debian roots of
# scripts/otp_root.sh (built when absent). For each pair it starts two target nodes on the target's
# OTP (one with OTP's compiler off its code path), then runs test/binscope/cross_otp_test.exs
# (tag :cross_otp) on the caller's OTP against them. Fails when any pair fails, or runs no test.
# The checkout is copied into each root under $BINSCOPE_CROSS_DIR (default /work/binscope-cross);
# a root keeps its _build between runs, and builds into the cargo cache that scripts/test_otp.sh
# keeps in the root (/work/binscope-matrix/target), so after the matrix nothing is rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

pairs=${CROSS_PAIRS:-"29:25 25:29"}
dir=${BINSCOPE_CROSS_DIR:-/work/binscope-cross}
cookie="binscope_cross_$$_${RANDOM}"
host_otp=$(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().')
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

declare -A roots=()
pidfiles=()

# Each target writes its OS pid to a file (seen from the host) and is killed by that pid; it also
# halts by itself after 15 minutes, should this script die before it.
cleanup() {
  local f
  for f in "${pidfiles[@]}"; do
    if [ -s "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi
    rm -f "$f"
  done
  pidfiles=()
}
trap cleanup EXIT

root_of() {
  local otp=$1
  if [ -z "${roots[$otp]:-}" ]; then
    roots[$otp]=$(scripts/otp_root.sh "$otp" | tail -n 1)
  fi
  echo "${roots[$otp]}"
}

# Runs a bash command on OTP $1: on the host for the host's OTP, else in that OTP's root.
on_otp() {
  local otp=$1 cmd=$2
  if [ "$otp" = "$host_otp" ]; then
    bash -c "$cmd"
  else
    chroot "$(root_of "$otp")" /usr/bin/env -i HOME=/root \
      PATH=/root/.cargo/bin:/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 LC_ALL=C.UTF-8 \
      CARGO_TARGET_DIR=/work/binscope-matrix/target ${CI:+CI=$CI} /bin/bash -c "$cmd"
  fi
}

# Where the project is on OTP $1 (the checkout itself on the host, a copy in a root).
project_on() {
  if [ "$1" = "$host_otp" ]; then echo "$repo"; else echo "$dir"; fi
}

declare -A built=()
build_on() {
  local otp=$1
  [ -n "${built[$otp]:-}" ] && return 0
  if [ "$otp" != "$host_otp" ]; then
    local root
    root=$(root_of "$otp")
    # The tracked files, over the previous copy, whose build output (target/, _build/) is kept.
    "$repo/scripts/copy_tracked.sh" "$repo" "$root$dir"
  fi
  echo "cross-otp: building on OTP $otp" >&2
  on_otp "$otp" "cd $(project_on "$otp")/mix_project && MIX_ENV=test mix compile"
  built[$otp]=1
}

# Starts a bare target node on OTP $1 named $2; $3: extra erl arguments.
start_target() {
  local otp=$1 name=$2 extra=${3:-} base=""
  [ "$otp" = "$host_otp" ] || base=$(root_of "$otp")
  local pidfile="/tmp/binscope-cross-$name.pid"
  rm -f "$base$pidfile"
  pidfiles+=("$base$pidfile")
  on_otp "$otp" "exec erl -name $name@127.0.0.1 -setcookie $cookie -noshell -noinput \
      -eval 'file:write_file(\"$pidfile\", os:getpid()), \
             spawn(fun() -> timer:sleep(900000), erlang:halt() end)' $extra" \
    >"/tmp/binscope-cross-$name.log" 2>&1 &
}

status=0
for pair in $pairs; do
  caller=${pair%%:*}
  target=${pair##*:}
  [ "$caller" != "$target" ] || { echo "cross-otp: $pair is not cross-version" >&2; exit 2; }
  build_on "$caller"
  # The target needs no Binscope; its OTP must only be there (a root is made when absent).
  [ "$target" = "$host_otp" ] || root_of "$target" >/dev/null

  t="cross${target}t$$"
  nc="cross${target}nc$$"
  start_target "$target" "$t"
  start_target "$target" "$nc" "-eval 'true = code:del_path(compiler)'"
  echo "cross-otp: OTP $caller -> OTP $target" >&2

  log="/tmp/binscope-cross-$caller-$target.log"
  if on_otp "$caller" "cd $(project_on "$caller")/mix_project && \
      BINSCOPE_CROSS_TARGET=$t@127.0.0.1 BINSCOPE_CROSS_NO_COMPILER_TARGET=$nc@127.0.0.1 \
      BINSCOPE_CROSS_COOKIE=$cookie MIX_ENV=test \
      mix test --only cross_otp test/binscope/cross_otp_test.exs" 2>&1 | tee "$log"; then
    # "4 tests, 0 failures" (Elixir 1.14-1.18) or "Result: 4 passed" (1.20): at least one ran.
    if grep -Eq '^[1-9][0-9]* tests?, 0 failures|^Result: [1-9][0-9]* passed' "$log" &&
      ! grep -Eq '^Result: .*failed' "$log"; then
      echo "cross-otp: OTP $caller -> OTP $target passed" >&2
    else
      echo "cross-otp: OTP $caller -> OTP $target ran no test" >&2
      status=1
    fi
  else
    echo "cross-otp: OTP $caller -> OTP $target FAILED (log: $log)" >&2
    status=1
  fi
  cleanup
done
exit $status
