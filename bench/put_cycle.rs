//! criterion benchmarks of the core's small-put path against its physical floor: the store's
//! steady cycle (a window of 8 live entries, each new put dropping the oldest, as the VM bench
//! `store_vm` runs it) next to `memcpy` of the same bytes into a reused buffer (warm: the
//! floor of any copy) and into a fresh allocation (what a copy that keeps its result costs).
//! Run with `cargo bench -p binscope_core --bench put_cycle` (`make bench` runs every bench).

use std::collections::VecDeque;
use std::hint::black_box;

use binscope_core::store::{Label, Registry};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const WINDOW: usize = 8;
const SIZES: [usize; 4] = [1 << 10, 64 << 10, 1 << 20, 16 << 20];

fn cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("put_cycle");
    for size in SIZES {
        let src = vec![1u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        if size >= 1 << 20 {
            g.sample_size(20);
        }
        // The floor: one memcpy into a warm buffer of the window (no allocation).
        let mut ring: Vec<Vec<u8>> = (0..WINDOW).map(|_| vec![0u8; size]).collect();
        let mut i = 0;
        g.bench_with_input(BenchmarkId::new("memcpy_warm", size), &size, |b, _| {
            b.iter(|| {
                i = (i + 1) % WINDOW;
                ring[i].copy_from_slice(black_box(&src));
                black_box(&ring[i]);
            })
        });
        // A copy that allocates its destination and drops the oldest of the window.
        let mut window: VecDeque<Vec<u8>> = VecDeque::with_capacity(WINDOW + 1);
        g.bench_with_input(BenchmarkId::new("memcpy_alloc", size), &size, |b, _| {
            b.iter(|| {
                window.push_back(black_box(&src).to_vec());
                if window.len() > WINDOW {
                    drop(window.pop_front());
                }
            })
        });
        // The store: put (copy, bookkeeping) and, eight puts later, the release of the entry.
        let r: Registry<u32> = Registry::new();
        let label = Label::atom("bench");
        let mut window = VecDeque::with_capacity(WINDOW + 1);
        g.bench_with_input(BenchmarkId::new("store_put", size), &size, |b, _| {
            b.iter(|| {
                window.push_back(r.put(black_box(&src), label.clone(), 1).unwrap());
                if window.len() > WINDOW {
                    drop(window.pop_front());
                }
            })
        });
        // The same through the monitored-owner entry point the NIF uses.
        let mut window = VecDeque::with_capacity(WINDOW + 1);
        let mut watch = |_: &u32| true;
        g.bench_with_input(
            BenchmarkId::new("store_put_watched", size),
            &size,
            |b, _| {
                b.iter(|| {
                    let blob = r
                        .put_watched(black_box(&src), label.clone(), 1, &mut watch)
                        .unwrap();
                    window.push_back(blob);
                    if window.len() > WINDOW {
                        drop(window.pop_front());
                    }
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, cycle);
criterion_main!(benches);
