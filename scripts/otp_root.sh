#!/usr/bin/env bash
# Builds (or reuses) a Debian root that carries a newer OTP and Elixir, and prepares it for use.
#
#   scripts/otp_root.sh 27    # trixie: OTP 27.3 + Elixir 1.18
#   scripts/otp_root.sh 29    # sid:    OTP 29.1 + Elixir 1.20
#
# Prints the root's path on its last line. Installing trixie's or sid's OTP on the Debian 12 host
# would replace its libc, so each lives in a debootstrap root (see ../shared/PLATFORM.md). The host's
# Rust toolchain is bind-mounted in; /proc and /dev are mounted. A root is cached under
# $BINSCOPE_ROOTS (default /var/cache/binscope/roots) and built from scratch when absent or
# incomplete (a root is complete once its stamp file exists).
set -euo pipefail

otp=${1:?usage: scripts/otp_root.sh 27|29}
case "$otp" in
  27) suite=trixie ;;
  29) suite=sid ;;
  *) echo "otp_root: OTP $otp is not in the matrix (27 or 29; 25 is the host)" >&2; exit 2 ;;
esac

base=${BINSCOPE_ROOTS:-/var/cache/binscope/roots}
root="$base/$suite"
stamp="$root/.binscope-root-ready"
pkgs=erlang-nox,erlang-dev,erlang-runtime-tools,erlang-tools,erlang-crypto,erlang-proper,elixir,build-essential,ca-certificates,git,make

[ "$(id -u)" -eq 0 ] || { echo "otp_root: needs root (debootstrap, chroot, mount)" >&2; exit 1; }

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "otp_root: installing debootstrap from Debian's packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# The mirror the host already uses (no other host is reachable).
mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n 1 || true)
[ -n "$mirror" ] || mirror=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n 1 || true)
[ -n "$mirror" ] || { echo "otp_root: no Debian mirror found in /etc/apt" >&2; exit 1; }

mounted() { mountpoint -q "$1"; }

if [ ! -f "$stamp" ]; then
  echo "otp_root: building the $suite root for OTP $otp in $root (a few minutes)" >&2
  for m in proc dev root/.cargo root/.rustup; do
    if mounted "$root/$m"; then umount -l "$root/$m"; fi
  done
  rm -rf "$root"
  mkdir -p "$base"
  debootstrap --variant=minbase --include="$pkgs" "$suite" "$root" "$mirror" >"$base/$suite.debootstrap.log" 2>&1 || {
    tail -n 30 "$base/$suite.debootstrap.log" >&2
    echo "otp_root: debootstrap of $suite failed (log: $base/$suite.debootstrap.log)" >&2
    exit 1
  }
  touch "$stamp"
fi

cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
mkdir -p "$root/root/.cargo" "$root/root/.rustup" "$root/work"
mounted "$root/proc" || mount -t proc proc "$root/proc"
mounted "$root/dev" || mount --bind /dev "$root/dev"
mounted "$root/root/.cargo" || mount --bind "$HOME/.cargo" "$root/root/.cargo"
mounted "$root/root/.rustup" || mount --bind "$HOME/.rustup" "$root/root/.rustup"
echo "$root"
