//! Attribution at node scale: 1M binary references over 50k processes (the bound is
//! 200 ms), with a realistic mix of exclusive and shared binaries; and 1M processes holding one
//! binary each (the scale suite's node), for attribution and a full leak scan's ranking.

use binscope_core::accounting::{attribute, attribute_parallel, BinRef, Snapshot};
use binscope_core::leaks::{full_ranking, reclaimed};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

/// 50k processes x 20 references: 80% exclusive binaries, 20% drawn from 1,000 shared ones.
fn node(processes: u64, per_process: u64) -> Snapshot {
    let mut s = Snapshot::with_capacity(processes as usize, (processes * per_process) as usize);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for p in 0..processes {
        for i in 0..per_process {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = if x.is_multiple_of(5) {
                0x10_0000 + 64 * (x % 1_000)
            } else {
                0x1_0000_0000 + 64 * (p * per_process + i)
            };
            s.push_ref(BinRef {
                key,
                size: 65 + x % 100_000,
                refc: 1 + x % 3,
            });
        }
        s.end_process();
    }
    s
}

/// `processes` processes, each holding one exclusive 100-byte binary at addresses 160 bytes
/// apart (as the scale suite's idle processes are allocated).
fn one_each(processes: u64) -> Snapshot {
    let mut s = Snapshot::with_capacity(processes as usize, processes as usize);
    for p in 0..processes {
        s.push_process([BinRef {
            key: 0x7f00_0000_0000 + 160 * p,
            size: 100,
            refc: 1,
        }]);
    }
    s
}

fn bench(c: &mut Criterion) {
    let snap = node(50_000, 20);
    assert_eq!(snap.total_refs(), 1_000_000);
    let mut g = c.benchmark_group("attribution");
    g.sample_size(20);
    g.bench_function("attribute_1M_refs_50k_procs", |b| {
        b.iter(|| attribute(&snap, 20))
    });
    for threads in [2, 4] {
        g.bench_function(
            format!("attribute_1M_refs_50k_procs_{threads}_threads"),
            |b| b.iter(|| attribute_parallel(&snap, 20, threads)),
        );
    }
    let empty = {
        let mut s = Snapshot::new();
        for _ in 0..snap.processes() {
            s.end_process();
        }
        s
    };
    g.bench_function("reclaimed_1M_refs_all_dropped", |b| {
        b.iter(|| reclaimed(&snap, &empty, |_| false))
    });
    let million = one_each(1_000_000);
    g.bench_function("attribute_1M_procs_1_ref", |b| {
        b.iter(|| attribute(&million, 20))
    });
    g.bench_function("attribute_1M_procs_1_ref_2_threads", |b| {
        b.iter(|| attribute_parallel(&million, 20, 2))
    });
    let heap = vec![0; million.processes()];
    g.bench_function("full_ranking_1M_procs_1_ref_all_kept", |b| {
        b.iter(|| full_ranking(&million, &million, &heap, |_| true, 10))
    });
    g.bench_function("build_snapshot_1M_refs", |b| {
        b.iter_batched(|| (), |()| node(50_000, 20), BatchSize::LargeInput)
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
