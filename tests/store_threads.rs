//! Multi-threaded integration tests of the store core: counters come back to exactly zero and the
//! capacity is never exceeded, whatever the interleaving.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use binscope_core::store::{Label, Registry};
use binscope_core::StoreError;

const THREADS: usize = 8;
/// Iterations per thread are divided by this under Miri (about 1000x slower, and it explores
/// thread interleavings itself); the assertions hold at either size.
const MIRI_DIV: usize = if cfg!(miri) { 40 } else { 1 };

#[test]
fn concurrent_put_intern_drop_returns_to_zero() {
    let r: Registry<usize> = Registry::new();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let r = r.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let mut held = Vec::new();
                for i in 0..2_000usize / MIRI_DIV {
                    let label = Label::atom(["a", "b", "c"][i % 3]);
                    match i % 4 {
                        0 => held.push(r.put(&vec![t as u8; i % 300], label, t).unwrap()),
                        1 => held.push(r.alloc((i % 500) as u64, 1, label, t).unwrap()),
                        // Shared content across threads exercises dedup races.
                        _ => held.push(r.intern(&[(i % 7) as u8; 100], label, t).unwrap().blob),
                    }
                    if i % 5 == 0 {
                        held.swap_remove(i % held.len());
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = r.stats();
    assert_eq!((s.live_count, s.live_bytes, s.reserved_bytes), (0, 0, 0));
    assert_eq!(s.allocs, s.frees);
    assert!(s.dedup_hits > 0);
    assert!(r
        .by_label()
        .iter()
        .all(|(_, l)| l.count == 0 && l.bytes == 0));
    assert!(r.by_owner().is_empty());
}

#[test]
fn concurrent_interns_of_one_content_share_one_allocation() {
    let r: Registry<usize> = Registry::new();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let r = r.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                r.intern(&[42; 4096], Label::default_label(), t).unwrap()
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results
        .iter()
        .all(|i| Arc::ptr_eq(&i.blob, &results[0].blob)));
    assert_eq!(results.iter().filter(|i| !i.hit).count(), 1);
    let s = r.stats();
    assert_eq!((s.live_count, s.dedup_hits), (1, THREADS as u64 - 1));
}

#[test]
fn capacity_is_never_exceeded_under_contention() {
    let r: Registry<usize> = Registry::new();
    let cap = 64 * 1024;
    r.set_capacity(Some(cap));
    let max_seen = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (r, max_seen, refused) = (r.clone(), max_seen.clone(), refused.clone());
            thread::spawn(move || {
                let mut held = Vec::new();
                for i in 0..3_000usize / MIRI_DIV {
                    match r.alloc(1024 + (i % 3) as u64 * 512, 0, Label::default_label(), t) {
                        Ok(b) => held.push(b),
                        Err(StoreError::Capacity) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            held.clear();
                        }
                        Err(e) => panic!("unexpected {e}"),
                    }
                    let s = r.stats();
                    max_seen.fetch_max(s.live_bytes + s.reserved_bytes, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(max_seen.load(Ordering::Relaxed) <= cap);
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the cap was actually reached"
    );
    assert!(r.stats().peak_bytes <= cap);
    assert_eq!(r.stats().live_bytes, 0);
}
