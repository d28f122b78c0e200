//! criterion benchmarks of the store core: record + release of an entry (alone, with 100k live
//! entries, release only, 2 and 4 threads), dedup lookups (hit, miss, 2 threads) and `stats()`.
//! Run with `cargo bench -p binscope_core --bench store` (`make bench` runs every bench).

use std::hint::black_box;
use std::sync::Arc;
use std::thread;

use binscope_core::store::{Label, Registry};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn record_and_release(c: &mut Criterion) {
    let mut g = c.benchmark_group("record_release");
    for size in [64usize, 1024, 64 * 1024] {
        let r: Registry<u32> = Registry::new();
        let data = vec![1u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("put_drop", size), &size, |b, _| {
            b.iter(|| drop(black_box(r.put(&data, Label::default_label(), 1).unwrap())))
        });
    }
    let r: Registry<u32> = Registry::new();
    g.bench_function("put_drop_4_threads_64B", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let r = r.clone();
                    thread::spawn(move || {
                        for _ in 0..iters / 4 {
                            drop(black_box(
                                r.put(&[0; 64], Label::default_label(), t).unwrap(),
                            ));
                        }
                    })
                })
                .collect();
            hs.into_iter().for_each(|h| h.join().unwrap());
            start.elapsed()
        })
    });
    // The same with 100k live entries: the B-tree and label/owner maps are populated.
    let r: Registry<u32> = Registry::new();
    let _live: Vec<_> = (0..100_000u32)
        .map(|i| r.put(&[0; 8], Label::default_label(), i % 64).unwrap())
        .collect();
    g.bench_function("put_drop_64B_with_100k_live", |b| {
        b.iter(|| {
            drop(black_box(
                r.put(&[0; 64], Label::default_label(), 1).unwrap(),
            ))
        })
    });
    // Release alone: drop 1,000 entries, then one stats() call applies the deferred releases.
    let r: Registry<u32> = Registry::new();
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("release_1000_then_stats", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let held: Vec<_> = (0..1_000)
                    .map(|_| r.put(&[0; 64], Label::default_label(), 1).unwrap())
                    .collect();
                let start = std::time::Instant::now();
                drop(held);
                black_box(r.stats());
                total += start.elapsed();
            }
            total
        })
    });
    g.throughput(Throughput::Elements(1));
    let r: Registry<u32> = Registry::new();
    g.bench_function("put_drop_2_threads_64B", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            let hs: Vec<_> = (0..2)
                .map(|t| {
                    let r = r.clone();
                    thread::spawn(move || {
                        for _ in 0..iters / 2 {
                            drop(black_box(
                                r.put(&[0; 64], Label::default_label(), t).unwrap(),
                            ));
                        }
                    })
                })
                .collect();
            hs.into_iter().for_each(|h| h.join().unwrap());
            start.elapsed()
        })
    });
    g.finish();
}

fn dedup_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedup");
    let r: Registry<u32> = Registry::new();
    let held: Vec<_> = (0..10_000u32)
        .map(|i| {
            r.intern(&i.to_le_bytes().repeat(16), Label::default_label(), 1)
                .unwrap()
        })
        .collect();
    let probe = 1234u32.to_le_bytes().repeat(16);
    g.bench_function("hit_64B_of_10k", |b| {
        b.iter(|| black_box(r.intern(&probe, Label::default_label(), 1).unwrap()))
    });
    let big = Arc::new(vec![7u8; 1 << 20]);
    let _big_held = r.intern(&big, Label::default_label(), 1).unwrap();
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("hit_1MiB", |b| {
        b.iter(|| black_box(r.intern(&big, Label::default_label(), 1).unwrap()))
    });
    // A miss: new content each time (hash, lookup, copy, insert), dropped right after.
    let mut n = 0u64;
    g.throughput(Throughput::Bytes(64));
    g.bench_function("miss_64B_of_10k", |b| {
        b.iter(|| {
            n += 1;
            let content = n.to_le_bytes().repeat(8);
            black_box(r.intern(&content, Label::default_label(), 1).unwrap())
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("hit_64B_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            let hs: Vec<_> = (0..2)
                .map(|t| {
                    let r = r.clone();
                    let probe = probe.clone();
                    thread::spawn(move || {
                        for _ in 0..iters / 2 {
                            black_box(r.intern(&probe, Label::default_label(), t).unwrap());
                        }
                    })
                })
                .collect();
            hs.into_iter().for_each(|h| h.join().unwrap());
            start.elapsed()
        })
    });
    drop(held);
    g.finish();
}

fn stats_call(c: &mut Criterion) {
    let r: Registry<u32> = Registry::new();
    let _live: Vec<_> = (0..100_000u32)
        .map(|i| r.put(&[0; 8], Label::default_label(), i % 64).unwrap())
        .collect();
    c.bench_function("stats_with_100k_live", |b| b.iter(|| black_box(r.stats())));
}

criterion_group!(benches, record_and_release, dedup_lookup, stats_call);
criterion_main!(benches);
