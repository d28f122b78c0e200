#!/usr/bin/env bash
# Attribution and the full leak scan's ranking of binscope_core at two commits, side by side:
# builds one small program against each tree (jemalloc with the NIF's options, as in the VM)
# and runs them interleaved, ROUNDS times each, on a snapshot of PROCESSES processes holding
# PER binaries each. Usage: scripts/attribution_ab.sh BASE [PROCESSES] [PER]
# (e.g. scripts/attribution_ab.sh 668add5 1000000 1; 50000 20 is criterion's mix).
set -euo pipefail
base=${1:?usage: scripts/attribution_ab.sh BASE [PROCESSES] [PER]}
processes=${2:-1000000}
per=${3:-1}
rounds=${ROUNDS:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/attribution_ab.XXXXXX)
trap 'git -C "$repo" worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$repo" worktree add -q --detach "$work/base" "$base"

program() { # $1: name, $2: path of binscope_core
  mkdir -p "$work/ab_$1/src"
  cat >"$work/ab_$1/Cargo.toml" <<TOML
[package]
name = "ab_$1"
version = "0.0.0"
edition = "2021"
[dependencies]
binscope_core = { path = "$2" }
tikv-jemallocator = { version = "0.7", features = ["disable_initial_exec_tls"] }
[workspace]
TOML
  cat >"$work/ab_$1/src/main.rs" <<'RUST'
use binscope_core::accounting::{attribute, attribute_parallel, BinRef, Snapshot};
use binscope_core::leaks::full_ranking;
use std::time::Instant;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"oversize_threshold:1099511627776,retain:false\0";

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (n, per) = (args[0], args[1]);
    // Exclusive binaries 160 bytes apart; with several a process, one in five from 1,000 shared.
    let mut s = Snapshot::with_capacity(n as usize, (n * per) as usize);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for p in 0..n {
        for i in 0..per {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let shared = per > 1 && x % 5 == 0;
            let key = if shared { 0x10_0000 + 64 * (x % 1_000) } else { 0x7f00_0000_0000 + 160 * (p * per + i) };
            s.push_ref(BinRef { key, size: 100, refc: if shared { 1 + x % 3 } else { 1 } });
        }
        s.end_process();
    }
    let ms = |f: &mut dyn FnMut()| { let t = Instant::now(); f(); t.elapsed().as_secs_f64() * 1e3 };
    let one = ms(&mut || { attribute(&s, 10); });
    let two = ms(&mut || { attribute_parallel(&s, 10, 2); });
    let heap = vec![0u64; s.processes()];
    let full = ms(&mut || { full_ranking(&s, &s, &heap, |_| true, 10); });
    println!("attribute {one:.0} ms, on 2 threads {two:.0} ms, full_ranking {full:.0} ms");
}
RUST
  (cd "$work/ab_$1" && CARGO_TARGET_DIR="$work/ab_$1/target" cargo build --release -q)
}

program base "$work/base/native/binscope_core"
program head "$repo/native/binscope_core"
for _ in $(seq "$rounds"); do
  for side in base head; do
    for _ in 1 2 3; do echo "$side ($([ $side = base ] && echo "$base" || echo working tree)): $("$work/ab_$side/target/release/ab_$side" "$processes" "$per")"; done
  done
done
