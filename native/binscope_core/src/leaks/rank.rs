//! Which processes the targeted leak finder collects: an estimate, before any GC, of the binary
//! bytes a forced major collection would give back that the process's own collections will not
//! give back soon.
//!
//! The upper bound is `uss`: bytes of binaries only this process references (refc-1 binaries, or
//! binaries whose every reference is its own). A GC can free nothing it shares. What lingers of
//! that depends on how the process runs:
//! - an idle process runs no GC at all, so everything only it references stays until it wakes;
//! - a running process frees young garbage at its next minor GC, soon; binaries referenced from
//!   its old heap (the old virtual binary heap) survived a collection and go only at a major one,
//!   which with the default `fullsweep_after` can be a long way off.

/// One candidate's figures, from the snapshot and two activity samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Candidate {
    /// Bytes of binaries only this process references.
    pub uss: u64,
    /// Binary bytes referenced from its young heap (`bin_vheap_size`, in bytes).
    pub vheap_bytes: u64,
    /// Binary bytes referenced from its old heap (`bin_old_vheap_size`, in bytes).
    pub old_vheap_bytes: u64,
    /// Reductions it ran between the two samples (our own probes included).
    pub reductions_delta: u64,
    /// Messages waiting at the second sample.
    pub message_queue_len: u64,
}

/// Reductions the sampling itself costs a process between the two samples: on OTP 25 the target
/// of a `process_info/2` call handles the request as a signal, one reduction each (measured).
pub const PROBE_REDUCTIONS: u64 = 2;

/// Idle: ran nothing but our own probes over the sampling window, and has no mail.
pub fn idle(c: &Candidate) -> bool {
    c.reductions_delta <= PROBE_REDUCTIONS && c.message_queue_len == 0
}

/// Bytes likely to be garbage that only a forced GC would free soon: all of `uss` for an idle
/// process, the old generation's share of it for a running one.
pub fn likely_garbage(c: &Candidate) -> u64 {
    if idle(c) {
        c.uss
    } else {
        c.uss.min(c.old_vheap_bytes)
    }
}

/// Candidate indices, most likely garbage first; ties go to the larger `uss`, then the lower
/// index (the snapshot's order), so the order is total and stable.
pub fn rank(candidates: &[Candidate]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        let (ca, cb) = (&candidates[a], &candidates[b]);
        (likely_garbage(cb), cb.uss)
            .cmp(&(likely_garbage(ca), ca.uss))
            .then(a.cmp(&b))
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn an_idle_holder_outranks_a_busier_one_with_more_young_binaries() {
        let busy = Candidate {
            uss: 8 * MIB,
            vheap_bytes: 8 * MIB,
            old_vheap_bytes: 0,
            reductions_delta: 40_000,
            message_queue_len: 0,
        };
        let idle_leaker = Candidate {
            uss: MIB,
            vheap_bytes: MIB,
            ..Candidate::default()
        };
        assert_eq!(likely_garbage(&busy), 0);
        assert_eq!(likely_garbage(&idle_leaker), MIB);
        assert_eq!(rank(&[busy, idle_leaker]), vec![1, 0]);
    }

    #[test]
    fn a_running_process_counts_its_old_generation_only() {
        let c = Candidate {
            uss: 5 * MIB,
            vheap_bytes: 2 * MIB,
            old_vheap_bytes: 3 * MIB,
            reductions_delta: 10,
            message_queue_len: 0,
        };
        assert_eq!(likely_garbage(&c), 3 * MIB);
        // Old-heap binaries it shares are no garbage of its own: capped by uss.
        let shared = Candidate { uss: MIB, ..c };
        assert_eq!(likely_garbage(&shared), MIB);
        // Queued messages mean it is about to run (and collect).
        let queued = Candidate {
            reductions_delta: 0,
            message_queue_len: 3,
            ..c
        };
        assert!(!idle(&queued));
        assert_eq!(likely_garbage(&queued), 3 * MIB);
    }

    #[test]
    fn ties_keep_the_snapshot_order() {
        let c = Candidate {
            uss: MIB,
            ..Candidate::default()
        };
        assert_eq!(rank(&[c, c, c]), vec![0, 1, 2]);
    }

    #[test]
    fn our_own_probes_do_not_make_a_process_busy() {
        let c = Candidate {
            uss: MIB,
            old_vheap_bytes: 0,
            reductions_delta: PROBE_REDUCTIONS,
            ..Candidate::default()
        };
        assert_eq!(likely_garbage(&c), MIB);
        let running = Candidate {
            reductions_delta: PROBE_REDUCTIONS + 1,
            ..c
        };
        assert_eq!(likely_garbage(&running), 0);
    }

    fn candidate() -> impl Strategy<Value = Candidate> {
        (
            0..64 * MIB,
            0..64 * MIB,
            0..64 * MIB,
            prop_oneof![0..=PROBE_REDUCTIONS, 0..100_000u64],
            prop_oneof![Just(0u64), 0..10u64],
        )
            .prop_map(|(uss, v, ov, r, q)| Candidate {
                uss,
                vheap_bytes: v,
                old_vheap_bytes: ov,
                reductions_delta: r,
                message_queue_len: q,
            })
    }

    proptest! {
        #[test]
        fn never_more_than_uss_and_idle_means_all_of_it(c in candidate()) {
            let g = likely_garbage(&c);
            prop_assert!(g <= c.uss);
            if idle(&c) {
                prop_assert_eq!(g, c.uss);
            }
        }

        #[test]
        fn rank_is_a_permutation_sorted_by_likely_garbage(cs in prop::collection::vec(candidate(), 0..50)) {
            let order = rank(&cs);
            let mut seen = order.clone();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..cs.len()).collect::<Vec<_>>());
            for w in order.windows(2) {
                prop_assert!(likely_garbage(&cs[w[0]]) >= likely_garbage(&cs[w[1]]));
            }
        }
    }
}
