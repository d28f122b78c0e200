#!/usr/bin/env bash
# Installs what Binscope needs and a fresh machine may lack, then says what it found.
# - Erlang/OTP and Elixir: Debian's packages (hex.pm is not needed: the project has no hex deps).
# - Rust: cargo with rustfmt and clippy (rustup components when rustup is there).
set -euo pipefail

need_pkgs=()
command -v erl >/dev/null 2>&1 || need_pkgs+=(erlang-nox erlang-dev)
command -v elixir >/dev/null 2>&1 || need_pkgs+=(elixir)
# runtime_tools/tools/proper are separate Debian packages; the tests and demos use them.
if command -v erl >/dev/null 2>&1; then
  libdir=$(erl -noshell -eval 'io:format("~s", [code:lib_dir()]), halt().')
  ls "$libdir" | grep -q '^runtime_tools-' || need_pkgs+=(erlang-runtime-tools)
  ls "$libdir" | grep -q '^tools-' || need_pkgs+=(erlang-tools)
  ls "$libdir" | grep -q '^proper-' || need_pkgs+=(erlang-proper)
else
  need_pkgs+=(erlang-runtime-tools erlang-tools erlang-proper)
fi

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${need_pkgs[*]} from Debian's packages"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "setup: missing ${need_pkgs[*]}, and this is not a Debian-like system (no apt-get)." >&2
    echo "setup: install Erlang/OTP >= 25 and Elixir >= 1.14 yourself, then run this again." >&2
    exit 1
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found. Binscope's NIF needs Rust >= 1.91 (rustup: https://rustup.rs)." >&2
  echo "setup: Debian's own cargo package is too old for rustler 0.39." >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi

echo "setup: $(erl -noshell -eval 'io:format("OTP ~s", [erlang:system_info(otp_release)]), halt().'), $(elixir --version | tail -n 1), $(cargo --version)"
