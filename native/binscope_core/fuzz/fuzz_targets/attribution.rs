#![no_main]
//! `attribution`: the fuzz input is a snapshot (every process's list of binary references); the
//! result of `attribute` is compared field by field with a direct, slow computation, and
//! `attribute_parallel` on 2 to 4 threads must give the identical result.
//!
//! The snapshot is allowed to be inconsistent in the ways a real scan is (process lists are read
//! one after the other): a key may come back with another size (address reused by a new binary)
//! or another reference count. Whatever the input:
//! - each binary counts once: `sum(pss) == unique_bytes`, `unique_binaries` = distinct keys;
//! - per process: `refs`, naive `bytes`, `distinct`, `uss`, `pss`, `shared`, `store_bytes` exact;
//! - totals: refs, naive bytes, shared binaries and bytes, external binaries exact;
//! - `top_shared` is the `top` heaviest shared binaries (size x holders, ties by key), in order.

use std::collections::{HashMap, HashSet};

use binscope_core::accounting::{
    attribute, attribute_parallel, is_unresolved, store_entry, store_key, Attribution, BinRef,
    ProcessShare, SharedBinary, Snapshot, Summary,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct RawRef {
    key: u8,
    /// Any key at all (addresses and store keys alike), instead of the small set.
    raw_key: Option<u64>,
    /// `None`: the size that belongs to the key. `Some`: another size (address reuse).
    size: Option<u32>,
    refc: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    processes: Vec<(bool, Vec<RawRef>)>,
    top: u8,
    threads: u8,
}

fn key_of(r: &RawRef) -> u64 {
    if let Some(k) = r.raw_key {
        return k;
    }
    let k = u64::from(r.key % 32);
    if k < 16 {
        0x7f00_0000_0000 + k * 64
    } else {
        store_key(k)
    }
}

/// A key's own size: varied remainders so PSS rounding is exercised. Up to ~1 TiB.
fn size_of_key(key: u64) -> u64 {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 24) % (1 << 40)
}

struct Facts {
    size: u64,
    refc: u64,
    holders: Vec<usize>,
    seen: u64,
}

fn check(snap: &Snapshot, a: &Attribution, top: usize) {
    let n = snap.processes();
    assert_eq!(a.processes.len(), n);

    // Per key, in snapshot order: first size seen, largest refc, holder processes (in order).
    let mut order: Vec<u64> = Vec::new();
    let mut facts: HashMap<u64, Facts> = HashMap::new();
    // Unresolved keys are only counted (`unresolved`), in no other figure.
    for p in 0..n {
        for r in snap.process(p).iter().filter(|r| !is_unresolved(r.key)) {
            let f = facts.entry(r.key).or_insert_with(|| {
                order.push(r.key);
                Facts {
                    size: r.size,
                    refc: r.refc,
                    holders: Vec::new(),
                    seen: 0,
                }
            });
            f.refc = f.refc.max(r.refc);
            f.seen += 1;
            if f.holders.last() != Some(&p) {
                f.holders.push(p);
            }
        }
    }

    let mut want_summary = Summary {
        processes: n as u64,
        ..Summary::default()
    };
    for p in 0..n {
        let all = snap.process(p);
        let refs: Vec<&BinRef> = all.iter().filter(|r| !is_unresolved(r.key)).collect();
        let distinct: HashSet<u64> = refs.iter().map(|r| r.key).collect();
        let mut want = ProcessShare {
            refs: refs.len() as u64,
            bytes: refs.iter().map(|r| r.size).sum(),
            distinct: distinct.len() as u64,
            unresolved: (all.len() - refs.len()) as u64,
            ..ProcessShare::default()
        };
        for k in &distinct {
            let f = &facts[k];
            let holders = f.holders.len() as u64;
            let rank = f.holders.iter().position(|h| *h == p).unwrap() as u64;
            want.pss += f.size / holders + u64::from(rank < f.size % holders);
            if holders == 1 && f.refc <= f.seen.min(u64::from(u32::MAX)) {
                want.uss += f.size;
            }
            if holders > 1 {
                want.shared += 1;
            }
            if store_entry(*k).is_some() {
                want.store_bytes += f.size;
            }
        }
        assert_eq!(a.processes[p], want, "process {p}");
        assert!(want.uss <= want.pss);
        want_summary.refs += want.refs;
        want_summary.naive_bytes += want.bytes;
        want_summary.unresolved += want.unresolved;
        want_summary.store_bytes += want.store_bytes;
    }

    let mut shared: Vec<SharedBinary> = Vec::new();
    for k in &order {
        let f = &facts[k];
        want_summary.unique_binaries += 1;
        want_summary.unique_bytes += f.size;
        if f.refc > f.seen.min(u64::from(u32::MAX)) {
            want_summary.external_binaries += 1;
        }
        if f.holders.len() > 1 {
            want_summary.shared_binaries += 1;
            want_summary.shared_bytes += f.size;
            shared.push(SharedBinary {
                key: *k,
                size: f.size,
                holders: f.holders.len() as u64,
                refc: f.refc,
            });
        }
    }
    assert_eq!(a.summary, want_summary);
    let pss: u64 = a.processes.iter().map(|p| p.pss).sum();
    assert_eq!(pss, a.summary.unique_bytes, "each binary counted once");

    let weight = |s: &SharedBinary| s.size.saturating_mul(s.holders);
    shared.sort_by(|x, y| weight(y).cmp(&weight(x)).then(x.key.cmp(&y.key)));
    shared.truncate(top);
    assert_eq!(a.top_shared, shared, "top_shared");
}

fn same(a: &Attribution, b: &Attribution) {
    assert_eq!(a.processes, b.processes);
    assert_eq!(a.summary, b.summary);
    assert_eq!(a.top_shared, b.top_shared);
}

fuzz_target!(|input: Input| {
    let mut snap = Snapshot::new();
    for (one_by_one, refs) in &input.processes {
        let refs = refs.iter().map(|r| {
            let key = key_of(r);
            BinRef {
                key,
                size: r.size.map_or_else(|| size_of_key(key), u64::from),
                refc: u64::from(r.refc),
            }
        });
        if *one_by_one {
            for r in refs {
                snap.push_ref(r);
            }
            snap.end_process();
        } else {
            snap.push_process(refs);
        }
    }
    let top = usize::from(input.top % 16);
    let a = attribute(&snap, top);
    check(&snap, &a, top);
    let threads = 2 + usize::from(input.threads % 3);
    same(&a, &attribute_parallel(&snap, top, threads));
});
