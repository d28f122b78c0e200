//! What forced garbage collections gave back.
//!
//! A binary is freed when its reference count reaches zero, not when one holder drops it. So a
//! binary counts as reclaimed only when (a) none of the collected processes holds it afterwards and
//! (b) nothing else held it before: its reference count did not exceed the references the collected
//! processes had (other processes, ETS, ports and NIFs all raise the count). Store entries are
//! checked against the store itself, which is exact: the caller says which entries are gone.
//!
//! `refs` is what recon's `bin_leak` reports (references dropped); `bytes` is what the node got
//! back, split among the processes that dropped each binary so that the sum is exact.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::accounting::{is_unresolved, store_entry, AddrHasher, Snapshot};

/// What a forced collection of one process gave back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reclaim {
    /// References the process dropped (list length before minus after).
    pub refs: u64,
    /// Its share of the bytes freed.
    pub bytes: u64,
    /// Distinct binaries it dropped that were freed.
    pub binaries: u64,
}

#[derive(Default)]
struct Seen {
    size: u64,
    refc: u64,
    refs_before: u64,
    held_after: bool,
    droppers: u64,
    served: u64,
    last_mark: usize,
}

/// `before` and `after` hold the same processes in the same order (empty lists for a process that
/// exited in between are fine). `store_entry_live(id)` tells whether a store entry still exists.
pub fn reclaimed(
    before: &Snapshot,
    after: &Snapshot,
    store_entry_live: impl Fn(u64) -> bool,
) -> Vec<Reclaim> {
    assert_eq!(
        before.processes(),
        after.processes(),
        "same processes before and after"
    );
    let n = before.processes();
    let mut seen: HashMap<u64, Seen, BuildHasherDefault<AddrHasher>> =
        HashMap::with_capacity_and_hasher(before.total_refs(), Default::default());
    // Unresolved binaries (unknown entry and size) are left out: nothing is claimed for them.
    for p in 0..n {
        for r in before.process(p).iter().filter(|r| !is_unresolved(r.key)) {
            let s = seen.entry(r.key).or_default();
            s.size = r.size;
            s.refc = s.refc.max(r.refc);
            s.refs_before += 1;
        }
    }
    // Held after by any collected process, wherever it is in the round: a round asks for the
    // collections of several processes at a time, so a process earlier in the round may be
    // listed after its collection later than a process further on was listed before its own.
    for p in 0..n {
        for r in after.process(p) {
            if let Some(s) = seen.get_mut(&r.key) {
                s.held_after = true;
            }
        }
    }
    let freed = |key: u64, s: &Seen| match store_entry(key) {
        Some(id) => !store_entry_live(id),
        None => !s.held_after && s.refc <= s.refs_before,
    };
    // Who dropped each freed binary (a process that held it before; none holds it after).
    for p in 0..n {
        for r in before.process(p).iter().filter(|r| !is_unresolved(r.key)) {
            let s = seen.get_mut(&r.key).expect("seen in the first pass");
            if s.last_mark != p + 1 {
                s.last_mark = p + 1;
                s.droppers += 1;
            }
        }
    }
    let mut out = Vec::with_capacity(n);
    for p in 0..n {
        let mut rec = Reclaim {
            refs: (before.process(p).len() as u64).saturating_sub(after.process(p).len() as u64),
            ..Reclaim::default()
        };
        let mark = n + p + 1;
        for r in before.process(p).iter().filter(|r| !is_unresolved(r.key)) {
            let s = seen.get_mut(&r.key).expect("seen in the first pass");
            if s.last_mark == mark {
                continue;
            }
            s.last_mark = mark;
            if freed(r.key, s) {
                let extra = u64::from(s.served < s.size % s.droppers);
                rec.bytes += s.size / s.droppers + extra;
                rec.binaries += 1;
                s.served += 1;
            }
        }
        out.push(rec);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::{store_key, BinRef};

    fn r(key: u64, size: u64, refc: u64) -> BinRef {
        BinRef { key, size, refc }
    }

    fn snap(lists: Vec<Vec<BinRef>>) -> Snapshot {
        let mut s = Snapshot::new();
        for l in lists {
            s.push_process(l);
        }
        s
    }

    #[test]
    fn dropped_exclusive_binaries_are_reclaimed() {
        let before = snap(vec![vec![r(1, 1000, 1), r(2, 500, 1), r(3, 70, 1)]]);
        let after = snap(vec![vec![r(3, 70, 1)]]);
        let got = reclaimed(&before, &after, |_| true);
        assert_eq!(
            got[0],
            Reclaim {
                refs: 2,
                bytes: 1500,
                binaries: 2
            }
        );
    }

    #[test]
    fn a_binary_someone_else_holds_is_not_reclaimed() {
        // refc 2, one reference seen: an uncollected process (or ETS) keeps it alive.
        let before = snap(vec![vec![r(1, 1000, 2)]]);
        let after = snap(vec![vec![]]);
        let got = reclaimed(&before, &after, |_| true);
        assert_eq!(
            got[0],
            Reclaim {
                refs: 1,
                bytes: 0,
                binaries: 0
            }
        );
    }

    #[test]
    fn a_binary_two_collected_processes_dropped_is_split_exactly() {
        let before = snap(vec![vec![r(1, 1001, 2)], vec![r(1, 1001, 2)]]);
        let after = snap(vec![vec![], vec![]]);
        let got = reclaimed(&before, &after, |_| true);
        assert_eq!(got[0].bytes + got[1].bytes, 1001);
        assert_eq!(got[0].refs + got[1].refs, 2);
    }

    #[test]
    fn still_held_by_another_collected_process_is_not_reclaimed() {
        let before = snap(vec![vec![r(1, 1000, 2)], vec![r(1, 1000, 2)]]);
        let after = snap(vec![vec![], vec![r(1, 1000, 1)]]);
        let got = reclaimed(&before, &after, |_| true);
        assert_eq!(got[0].bytes + got[1].bytes, 0);
    }

    #[test]
    fn held_after_by_a_process_earlier_in_the_round_is_not_reclaimed() {
        // Process 0 lists the binary only after its collection (it got it meanwhile), process 1
        // before its own (refc 1 then) and not after: process 0 still holds it, nothing freed.
        let before = snap(vec![vec![], vec![r(1, 1000, 1)]]);
        let after = snap(vec![vec![r(1, 1000, 1)], vec![]]);
        let got = reclaimed(&before, &after, |_| true);
        assert_eq!(got[1].bytes, 0);
        assert_eq!(got[1].refs, 1);
    }

    #[test]
    fn store_entries_follow_the_store() {
        let k = store_key(42);
        let before = snap(vec![vec![r(k, 1 << 20, 1)], vec![r(store_key(43), 10, 1)]]);
        let after = snap(vec![vec![], vec![]]);
        let got = reclaimed(&before, &after, |id| id == 43);
        assert_eq!(got[0].bytes, 1 << 20);
        assert_eq!(got[1].bytes, 0);
    }
}
