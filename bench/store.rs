//! criterion benchmarks of the store core: record + release of an entry, and dedup lookups.

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
    drop(held);
    g.finish();
}

criterion_group!(benches, record_and_release, dedup_lookup);
criterion_main!(benches);
