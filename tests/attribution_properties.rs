//! Property tests of attribution and reclaim: every binary counts once, whatever the sharing.

use std::collections::{HashMap, HashSet};

use binscope_core::accounting::{attribute, attribute_parallel, BinRef, Snapshot};
use binscope_core::leaks::reclaimed;
use proptest::prelude::*;

/// Processes as lists of (binary index, extra refc from outside holders) over a small universe.
fn world() -> impl Strategy<Value = (Vec<u64>, Vec<Vec<usize>>, Vec<u64>)> {
    (1usize..40).prop_flat_map(|nbins| {
        (
            prop::collection::vec(0u64..5_000_000, nbins),
            prop::collection::vec(prop::collection::vec(0..nbins, 0..12), 0..30),
            prop::collection::vec(0u64..2, nbins),
        )
    })
}

fn build(sizes: &[u64], procs: &[Vec<usize>], outside: &[u64]) -> Snapshot {
    let mut refc: HashMap<usize, u64> = HashMap::new();
    for p in procs {
        for &b in p {
            *refc.entry(b).or_default() += 1;
        }
    }
    let mut s = Snapshot::new();
    for p in procs {
        s.push_process(p.iter().map(|&b| BinRef {
            key: 0x1000 + 16 * b as u64,
            size: sizes[b],
            refc: refc[&b] + outside[b],
        }));
    }
    s
}

proptest! {
    // Under Miri (about 1000x slower): 8 cases per property and no regression file (Miri
    // isolates the file system). Natively: proptest's default 256.
    #![proptest_config(if cfg!(miri) {
        ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig::default()
    })]

    #[test]
    fn pss_sums_to_unique_bytes_and_naive_to_list_sums((sizes, procs, outside) in world()) {
        let s = build(&sizes, &procs, &outside);
        let a = attribute(&s, 5);
        let held: HashSet<usize> = procs.iter().flatten().copied().collect();
        let unique: u64 = held.iter().map(|&b| sizes[b]).sum();
        prop_assert_eq!(a.processes.iter().map(|p| p.pss).sum::<u64>(), unique);
        prop_assert_eq!(a.summary.unique_bytes, unique);
        prop_assert_eq!(a.summary.unique_binaries, held.len() as u64);
        let naive: u64 = procs.iter().flatten().map(|&b| sizes[b]).sum();
        prop_assert_eq!(a.summary.naive_bytes, naive);
        for (i, p) in procs.iter().enumerate() {
            let share = a.processes[i];
            prop_assert!(share.uss <= share.pss && share.pss <= share.bytes);
            // USS: binaries no other process holds and nothing outside holds.
            let mine: HashSet<usize> = p.iter().copied().collect();
            let uss: u64 = mine
                .iter()
                .filter(|&&b| outside[b] == 0 && procs.iter().enumerate().all(|(j, q)| j == i || !q.contains(&b)))
                .map(|&b| sizes[b])
                .sum();
            prop_assert_eq!(share.uss, uss);
        }
    }

    #[test]
    fn parallel_attribution_is_identical((sizes, procs, outside) in world(), threads in 2usize..5) {
        let s = build(&sizes, &procs, &outside);
        let (a, b) = (attribute(&s, 7), attribute_parallel(&s, 7, threads));
        prop_assert_eq!(a.processes, b.processes);
        prop_assert_eq!(a.summary, b.summary);
        prop_assert_eq!(a.top_shared, b.top_shared);
    }

    #[test]
    fn reclaimed_bytes_never_exceed_what_was_dropped_and_count_once(
        (sizes, procs, outside) in world(),
        keep in prop::collection::vec(any::<bool>(), 30),
    ) {
        let before = build(&sizes, &procs, &outside);
        // Each process keeps all its references or drops all of them.
        let after_lists: Vec<Vec<usize>> = procs
            .iter()
            .enumerate()
            .map(|(i, p)| if keep[i] { p.clone() } else { vec![] })
            .collect();
        let after = build(&sizes, &after_lists, &outside);
        let got = reclaimed(&before, &after, |_| true);
        let kept: HashSet<usize> = after_lists.iter().flatten().copied().collect();
        let freed: u64 = procs
            .iter()
            .flatten()
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|b| !kept.contains(b) && outside[*b] == 0)
            .map(|b| sizes[b])
            .sum();
        prop_assert_eq!(got.iter().map(|r| r.bytes).sum::<u64>(), freed);
    }
}
