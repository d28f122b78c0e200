//! Selections over a whole node's figures, so that a scan of a million processes builds terms
//! for the few it reports instead of a record per process.
//!
//! - [`top_by`] (from [`crate::accounting::top`]): the `k` largest of `n` keyed items.
//! - [`full_ranking`]: the ranking of a full leak scan (every process collected): what each
//!   collection freed, what each process retains, its waste, and the order of the results.

use std::cmp::Reverse;

use crate::accounting::attribution::exclusive;
use crate::accounting::key_index::{KeyIndex, PREFETCH_PROCESSES};
pub use crate::accounting::top::top_by;
use crate::accounting::{is_unresolved, store_entry, BinRef, ProcessShare, Snapshot};
use crate::leaks::{waste, Facts, Reclaim};
#[cfg(doc)]
use crate::{accounting::attribute, leaks::reclaimed};

/// From this many references (before and after together), [`full_ranking`] runs its passes
/// over the references on three threads.
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
    store_entry_live: impl Fn(u64) -> bool + Sync,
    limit: usize,
) -> Vec<FullRow> {
    let n = before.processes();
    assert_eq!(after.processes(), n, "same processes before and after");
    assert_eq!(heap_bytes.len(), n, "one heap figure per process");
    let (freed, retained, uss) = round_figures(before, after, &store_entry_live);
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
            uss_before: uss[i],
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

/// What [`attribute`] of one snapshot (before or after) knows of a binary after its first pass:
/// the first reference's size, the largest reference count listed, the processes holding it and
/// the references seen.
#[derive(Clone, Copy, Default)]
struct Seen {
    size: u64,
    refc: u64,
    holders: u32,
    refs: u32,
}

/// One binary of a GC round (a key listed before or after, unresolved ones left out): what each
/// snapshot's attribution knows of it, and the size [`reclaimed`] takes for it (the last
/// reference's before the collections). [`reclaimed`]'s "held after" is `after.refs > 0`.
#[derive(Clone, Copy, Default)]
struct RoundSlot {
    before: Seen,
    after: Seen,
    last_size: u64,
}

/// Marks slot `i` as listed by process `mark` (1-based) in `seen`, counting a new holder once.
fn see(seen: &mut Seen, last: &mut u32, mark: u32, r: &BinRef) {
    if seen.holders == 0 {
        seen.size = r.size;
        seen.refc = r.refc;
    } else {
        seen.refc = seen.refc.max(r.refc);
    }
    seen.refs = seen.refs.saturating_add(1);
    if *last != mark {
        *last = mark;
        seen.holders += 1;
    }
}

/// The figures [`full_ranking`] ranks by, for every process of a GC round: what its collection
/// freed (as [`reclaimed`]), its share of what it holds after (as [`attribute`] of `after`) and
/// the bytes only it referenced before (the `uss` of [`attribute`] of `before`), identical to
/// those three. One hash index of the keys serves all three (each of them hashed every
/// reference again, up to four times: at a million processes the lookups, in tables far larger
/// than the caches, were most of a full scan's ranking); their second passes then walk dense
/// slots, each with its own marks, on three threads for a large round.
fn round_figures(
    before: &Snapshot,
    after: &Snapshot,
    store_entry_live: &(impl Fn(u64) -> bool + Sync),
) -> (Vec<Reclaim>, Vec<ProcessShare>, Vec<u64>) {
    let n = before.processes();
    let mut index = KeyIndex::with_capacity(before.total_refs() + 16);
    let mut slots: Vec<RoundSlot> = Vec::with_capacity(before.total_refs() + 16);
    // Pass 1 marks (1 + the last process that listed the slot, before and after).
    let mut marks: Vec<(u32, u32)> = Vec::with_capacity(before.total_refs() + 16);
    let mut slot_before = Vec::with_capacity(before.total_refs());
    let mut slot_after = Vec::with_capacity(after.total_refs());
    for p in 0..n {
        // The probes of a few processes ahead, in flight while this one's are looked up.
        if p + PREFETCH_PROCESSES < n {
            let ahead = p + PREFETCH_PROCESSES;
            for r in before.process(ahead).iter().chain(after.process(ahead)) {
                if !is_unresolved(r.key) {
                    index.prefetch(r.key);
                }
            }
        }
        let mark = p as u32 + 1;
        for (snap, out, is_after) in [
            (before, &mut slot_before, false),
            (after, &mut slot_after, true),
        ] {
            for r in snap.process(p) {
                if is_unresolved(r.key) {
                    out.push(SKIP);
                    continue;
                }
                let (i, new) = index.slot(r.key);
                if new {
                    slots.push(RoundSlot::default());
                    marks.push((0, 0));
                }
                let (s, m) = (&mut slots[i as usize], &mut marks[i as usize]);
                if is_after {
                    see(&mut s.after, &mut m.1, mark, r);
                } else {
                    see(&mut s.before, &mut m.0, mark, r);
                    s.last_size = r.size;
                }
                out.push(i);
            }
        }
    }
    drop(index);
    drop(marks);
    let slots = &slots[..];
    let (slot_before, slot_after) = (&slot_before[..], &slot_after[..]);
    let uss = || uss_pass(before, slot_before, slots);
    let retained = || share_pass(after, slot_after, slots);
    let freed = || reclaim_pass(before, after, slot_before, slots, store_entry_live);
    if before.total_refs() + after.total_refs() >= PARALLEL_REFS {
        std::thread::scope(|scope| {
            let u = scope.spawn(uss);
            let r = scope.spawn(retained);
            let f = freed();
            (
                f,
                r.join().expect("attribution thread panicked"),
                u.join().expect("attribution thread panicked"),
            )
        })
    } else {
        (freed(), retained(), uss())
    }
}

const SKIP: u32 = u32::MAX;

/// Each process's `uss` in `before`, as [`attribute`]'s second pass computes it.
fn uss_pass(before: &Snapshot, slot_of: &[u32], slots: &[RoundSlot]) -> Vec<u64> {
    let mut last = vec![0u32; slots.len()];
    let mut out = Vec::with_capacity(before.processes());
    let mut at = 0;
    for p in 0..before.processes() {
        let mark = p as u32 + 1;
        let k = before.process(p).len();
        let mut uss = 0;
        for &i in &slot_of[at..at + k] {
            if i == SKIP || last[i as usize] == mark {
                continue;
            }
            last[i as usize] = mark;
            let s = slots[i as usize].before;
            if exclusive(s.holders, s.refc, s.refs) {
                uss += s.size;
            }
        }
        at += k;
        out.push(uss);
    }
    out
}

/// Each process's share of `after`, as [`attribute`]'s second pass computes it.
fn share_pass(after: &Snapshot, slot_of: &[u32], slots: &[RoundSlot]) -> Vec<ProcessShare> {
    // Per slot: 1 + the last process given its share, and the holders served so far.
    let mut state = vec![(0u32, 0u32); slots.len()];
    let mut out = Vec::with_capacity(after.processes());
    let mut at = 0;
    for p in 0..after.processes() {
        let mark = p as u32 + 1;
        let refs = after.process(p);
        let mut share = ProcessShare::default();
        for (r, &i) in refs.iter().zip(&slot_of[at..at + refs.len()]) {
            if i == SKIP {
                if is_unresolved(r.key) {
                    share.unresolved += 1;
                }
                continue;
            }
            share.refs += 1;
            share.bytes += r.size;
            let st = &mut state[i as usize];
            if st.0 == mark {
                continue;
            }
            st.0 = mark;
            let s = slots[i as usize].after;
            let store = store_entry(r.key).is_some();
            share.add_distinct(s.size, s.refc, s.holders, s.refs, st.1, store);
            st.1 += 1;
        }
        at += refs.len();
        out.push(share);
    }
    out
}

/// What each process's collection freed, as [`reclaimed`] computes it: a binary no collected
/// process holds after and that nothing else held before (a store entry: that the store freed),
/// its size split among the processes that listed it before.
fn reclaim_pass(
    before: &Snapshot,
    after: &Snapshot,
    slot_of: &[u32],
    slots: &[RoundSlot],
    store_entry_live: &impl Fn(u64) -> bool,
) -> Vec<Reclaim> {
    let mut state = vec![(0u32, 0u32); slots.len()];
    let mut out = Vec::with_capacity(before.processes());
    let mut at = 0;
    for p in 0..before.processes() {
        let mark = p as u32 + 1;
        let refs = before.process(p);
        let mut rec = Reclaim {
            refs: (refs.len() as u64).saturating_sub(after.process(p).len() as u64),
            ..Reclaim::default()
        };
        for (r, &i) in refs.iter().zip(&slot_of[at..at + refs.len()]) {
            if i == SKIP {
                continue;
            }
            let st = &mut state[i as usize];
            if st.0 == mark {
                continue;
            }
            st.0 = mark;
            let s = slots[i as usize];
            let freed = match store_entry(r.key) {
                Some(id) => !store_entry_live(id),
                None => s.after.refs == 0 && s.before.refc <= u64::from(s.before.refs),
            };
            if freed {
                // Droppers: the processes that listed it before.
                let droppers = u64::from(s.before.holders);
                let extra = u64::from(u64::from(st.1) < s.last_size % droppers);
                rec.bytes += s.last_size / droppers + extra;
                rec.binaries += 1;
                st.1 += 1;
            }
        }
        at += refs.len();
        out.push(rec);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::{attribute, BinRef};
    use crate::leaks::reclaimed;
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
        /// The fused passes give every process exactly what the three separate computations
        /// give, including store and unresolved keys and one key listed at different sizes.
        #[test]
        fn round_figures_equal_reclaimed_and_both_attributions(
            lists in prop::collection::vec(prop::collection::vec((0u64..16, 1u64..5000, 1u64..4), 0..6), 0..40),
            keep in prop::collection::vec(any::<bool>(), 0..200),
            fresh in prop::collection::vec((0u64..24, 1u64..5000, 1u64..3), 0..20),
            live in prop::collection::vec(any::<bool>(), 4),
        ) {
            // Keys 0..12 addresses, 12 and 13 store entries, 14 and 15 unresolved.
            let key = |k: u64| match k {
                12 | 13 => crate::accounting::store_key(k),
                14 | 15 => crate::accounting::unresolved_key(k),
                _ => k,
            };
            let before: Vec<Vec<(u64, u64, u64)>> =
                lists.iter().map(|l| l.iter().map(|&(k, s, c)| (key(k), s, c)).collect()).collect();
            let mut k = keep.iter().copied().cycle().chain(std::iter::repeat(true));
            let mut f = fresh.iter().copied();
            // After: each reference kept or dropped, and some processes list new ones.
            let after: Vec<Vec<(u64, u64, u64)>> = before
                .iter()
                .map(|l| {
                    let mut a: Vec<_> = l.iter().copied().filter(|_| k.next().unwrap()).collect();
                    if let Some((k, s, c)) = f.next().filter(|x| x.0 < 16) {
                        a.push((key(k), s, c));
                    }
                    a
                })
                .collect();
            let (b, a) = (snap(&before), snap(&after));
            let is_live = |id: u64| live[(id % 4) as usize];
            let (freed, retained, uss) = round_figures(&b, &a, &is_live);
            prop_assert_eq!(freed, reclaimed(&b, &a, is_live));
            prop_assert_eq!(retained, attribute(&a, 0).processes);
            let want: Vec<u64> = attribute(&b, 0).processes.iter().map(|p| p.uss).collect();
            prop_assert_eq!(uss, want);
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
