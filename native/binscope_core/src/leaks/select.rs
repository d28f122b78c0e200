//! Selections over a whole node's figures, so that a scan of a million processes builds terms
//! for the few it reports instead of a record per process.
//!
//! - [`top_by`]: the `k` largest of `n` keyed items (a bounded heap: O(n log k), no sort of all).
//! - [`full_ranking`]: the ranking of a full leak scan (every process collected): what each
//!   collection freed, what each process retains, its waste, and the order of the results.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::accounting::{attribute, ProcessShare, Snapshot};
use crate::leaks::{reclaimed, waste, Facts, Reclaim};

/// The indexes of the `k` items with the largest `key(i)` (`i` in `0..n`), largest first; equal
/// keys rank the later index first (the order of a descending sort of `(key, index)`).
pub fn top_by<K: Ord + Copy>(n: usize, k: usize, key: impl Fn(usize) -> K) -> Vec<usize> {
    if k == 0 {
        return Vec::new();
    }
    // A min-heap of the best `k` so far: its root is the one to beat.
    let mut heap: BinaryHeap<Reverse<(K, usize)>> = BinaryHeap::with_capacity(k + 1);
    for i in 0..n {
        let e = (key(i), i);
        if heap.len() < k {
            heap.push(Reverse(e));
        } else if let Some(Reverse(min)) = heap.peek() {
            if e > *min {
                heap.pop();
                heap.push(Reverse(e));
            }
        }
    }
    let mut out: Vec<(K, usize)> = heap.into_iter().map(|Reverse(e)| e).collect();
    out.sort_unstable_by(|a, b| b.cmp(a));
    out.into_iter().map(|(_, i)| i).collect()
}

/// From this many references (before and after together), [`full_ranking`] runs its passes on
/// three threads.
pub const PARALLEL_REFS: usize = 200_000;

/// One process of a full leak scan's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullRow {
    /// Its position in the collected processes.
    pub index: usize,
    /// What its collection gave back.
    pub reclaim: Reclaim,
    /// Its share of the binaries it still holds after the collections.
    pub retained: ProcessShare,
    /// Bytes only it referenced before the collections (`binary_uss` then).
    pub uss_before: u64,
    /// [`waste`] from its figures (freed bytes plus bytes pinned by small slices).
    pub waste: u64,
}

/// The top `limit` rows of a full leak scan of the processes in `before` and `after` (their
/// binary lists just before and just after each one's forced collection; `heap_bytes[i]` its
/// heap and stack after it): the processes that waste something, by `(waste, reclaimed bytes,
/// references dropped)`, largest first (equal ones in scan order), then the others in scan
/// order. `store_entry_live(id)` tells whether a store entry survived. Every process's figures
/// are computed (every binary counted once over the node); rows are made for `limit` only.
pub fn full_ranking(
    before: &Snapshot,
    after: &Snapshot,
    heap_bytes: &[u64],
    store_entry_live: impl Fn(u64) -> bool,
    limit: usize,
) -> Vec<FullRow> {
    let n = before.processes();
    assert_eq!(after.processes(), n, "same processes before and after");
    assert_eq!(heap_bytes.len(), n, "one heap figure per process");
    // Three independent passes over the round: on three threads when the round is large
    // (each pass is one or two hash lookups per reference; at a million processes they were
    // most of the ranking's time on one thread).
    let (freed, retained, uss) = if before.total_refs() + after.total_refs() >= PARALLEL_REFS {
        std::thread::scope(|scope| {
            let r = scope.spawn(|| attribute(after, 0).processes);
            let u = scope.spawn(|| attribute(before, 0).processes);
            let f = reclaimed(before, after, store_entry_live);
            (
                f,
                r.join().expect("attribution thread panicked"),
                u.join().expect("attribution thread panicked"),
            )
        })
    } else {
        (
            reclaimed(before, after, store_entry_live),
            attribute(after, 0).processes,
            attribute(before, 0).processes,
        )
    };
    let row = |i: usize| {
        let r = retained[i];
        let f = Facts {
            reclaimed_bytes: freed[i].bytes,
            retained_binary_bytes: r.pss,
            retained_binaries: r.distinct,
            heap_bytes: heap_bytes[i],
            ..Facts::default()
        };
        FullRow {
            index: i,
            reclaim: freed[i],
            retained: r,
            uss_before: uss[i].uss,
            waste: waste(&f),
        }
    };
    let mut wasting = Vec::new();
    let mut rest = Vec::new();
    for i in 0..n {
        let w = row(i);
        if w.waste > 0 || w.reclaim.refs > 0 {
            wasting.push(w);
        } else if rest.len() < limit {
            rest.push(w);
        }
    }
    // Stable: equal keys keep scan order.
    wasting.sort_by_key(|w| Reverse((w.waste, w.reclaim.bytes, w.reclaim.refs)));
    wasting.truncate(limit);
    let fill = limit - wasting.len();
    wasting.extend(rest.into_iter().take(fill));
    wasting
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::BinRef;
    use proptest::prelude::*;

    fn snap(lists: &[Vec<(u64, u64, u64)>]) -> Snapshot {
        let mut s = Snapshot::new();
        for l in lists {
            s.push_process(
                l.iter()
                    .map(|&(key, size, refc)| BinRef { key, size, refc }),
            );
        }
        s
    }

    #[test]
    fn top_by_takes_the_largest_later_index_first_on_ties() {
        let v = [5u64, 1, 9, 5, 7, 9];
        assert_eq!(top_by(v.len(), 3, |i| v[i]), vec![5, 2, 4]);
        assert_eq!(top_by(v.len(), 0, |i| v[i]), Vec::<usize>::new());
        assert_eq!(top_by(v.len(), 10, |i| v[i]), vec![5, 2, 4, 3, 0, 1]);
        assert_eq!(top_by(0, 3, |_| 0u64), Vec::<usize>::new());
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn full_ranking_on_threads_matches_one_thread() {
        // Above PARALLEL_REFS: process i drops binary i (shared with its neighbour every 7th).
        let n = 120_000u64;
        let before: Vec<Vec<(u64, u64, u64)>> = (0..n)
            .map(|i| {
                let own = (1000 + i, 100 + i % 500, 1 + u64::from(i % 7 == 0));
                if i % 7 == 0 {
                    vec![own, (1000 + i + 1, 100 + (i + 1) % 500, 2)]
                } else {
                    vec![own]
                }
            })
            .collect();
        let after: Vec<Vec<(u64, u64, u64)>> = before
            .iter()
            .enumerate()
            .map(|(i, l)| if i % 3 == 0 { vec![] } else { l.clone() })
            .collect();
        let (b, a) = (snap(&before), snap(&after));
        assert!(b.total_refs() + a.total_refs() >= PARALLEL_REFS);
        let heap = vec![0u64; n as usize];
        let got = full_ranking(&b, &a, &heap, |_| false, 50);

        let freed = reclaimed(&b, &a, |_| false);
        let ret = attribute(&a, 0).processes;
        let uss = attribute(&b, 0).processes;
        assert_eq!(got.len(), 50);
        for w in &got {
            assert_eq!(w.reclaim, freed[w.index]);
            assert_eq!(w.retained, ret[w.index]);
            assert_eq!(w.uss_before, uss[w.index].uss);
        }
        let best = freed.iter().map(|r| r.bytes).max().unwrap();
        assert_eq!(got[0].reclaim.bytes, best);
    }

    proptest! {
        #[test]
        fn top_by_is_a_prefix_of_the_sorted_order(v in prop::collection::vec((0u64..20, 0u64..5), 0..200), k in 0usize..30) {
            let mut all: Vec<((u64, u64), usize)> = v.iter().copied().zip(0..).collect();
            all.sort_by(|a, b| b.cmp(a));
            let want: Vec<usize> = all.into_iter().take(k).map(|(_, i)| i).collect();
            prop_assert_eq!(top_by(v.len(), k, |i| v[i]), want);
        }

        #[test]
        fn full_ranking_matches_a_sort_of_every_row(
            lists in prop::collection::vec(prop::collection::vec((0u64..12, 1u64..5000, 1u64..4), 0..5), 0..30),
            keep in prop::collection::vec(any::<bool>(), 0..150),
            limit in 0usize..12,
        ) {
            // After: each reference kept or dropped.
            let mut k = keep.iter().copied().cycle().chain(std::iter::repeat(true));
            let after: Vec<Vec<(u64, u64, u64)>> = lists
                .iter()
                .map(|l| l.iter().copied().filter(|_| k.next().unwrap()).collect())
                .collect();
            let heap: Vec<u64> = (0..lists.len() as u64).map(|i| 100 * i).collect();
            let (b, a) = (snap(&lists), snap(&after));
            let got = full_ranking(&b, &a, &heap, |_| false, limit);

            // The reference: every row, then the order the Elixir side used to compute.
            let freed = reclaimed(&b, &a, |_| false);
            let ret = attribute(&a, 0).processes;
            let uss = attribute(&b, 0).processes;
            let rows: Vec<FullRow> = (0..lists.len())
                .map(|i| {
                    let f = Facts {
                        reclaimed_bytes: freed[i].bytes,
                        retained_binary_bytes: ret[i].pss,
                        retained_binaries: ret[i].distinct,
                        heap_bytes: heap[i],
                        ..Facts::default()
                    };
                    FullRow { index: i, reclaim: freed[i], retained: ret[i], uss_before: uss[i].uss, waste: waste(&f) }
                })
                .collect();
            let (mut wasting, none): (Vec<FullRow>, Vec<FullRow>) =
                rows.into_iter().partition(|r| r.waste > 0 || r.reclaim.refs > 0);
            wasting.sort_by_key(|x| Reverse((x.waste, x.reclaim.bytes, x.reclaim.refs)));
            let mut want: Vec<FullRow> = wasting.into_iter().take(limit).collect();
            let fill = limit - want.len();
            want.extend(none.into_iter().take(fill));
            prop_assert_eq!(got, want);
        }
    }
}
