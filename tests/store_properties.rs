//! Property tests of the accounting invariants over random operation sequences.

use std::collections::HashMap;
use std::sync::Arc;

use binscope_core::store::{Blob, Label, LiveFilter, Registry};
use binscope_core::StoreError;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put {
        size: usize,
        label: u8,
        owner: u8,
    },
    Alloc {
        size: u64,
        fill: u8,
        label: u8,
        owner: u8,
    },
    Intern {
        content: u8,
        size: usize,
        owner: u8,
    },
    Drop {
        index: usize,
    },
    OwnerDown {
        owner: u8,
    },
    SetCapacity {
        cap: Option<u64>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..2048, 0u8..4, 0u8..4).prop_map(|(size, label, owner)| Op::Put {
            size,
            label,
            owner
        }),
        (0u64..4096, any::<u8>(), 0u8..4, 0u8..4).prop_map(|(size, fill, label, owner)| {
            Op::Alloc {
                size,
                fill,
                label,
                owner,
            }
        }),
        (0u8..4, 0usize..512, 0u8..4).prop_map(|(content, size, owner)| Op::Intern {
            content,
            size,
            owner
        }),
        any::<usize>().prop_map(|index| Op::Drop { index }),
        (0u8..4).prop_map(|owner| Op::OwnerDown { owner }),
        prop::option::of(0u64..16_384).prop_map(|cap| Op::SetCapacity { cap }),
    ]
}

fn label(i: u8) -> Label {
    if i.is_multiple_of(2) {
        Label::atom(&format!("l{i}"))
    } else {
        Label::text(&format!("l{i}"))
    }
}

fn check_invariants(r: &Registry<u8>, held: &[Arc<Blob<u8>>]) {
    let s = r.stats();
    assert_eq!(s.live_count, s.allocs - s.frees, "live = allocs - frees");
    assert_eq!(s.reserved_bytes, 0);
    // Distinct allocations held (interned ones may be held several times).
    let mut distinct: HashMap<u64, u64> = HashMap::new();
    for b in held {
        distinct.insert(b.id(), b.len() as u64);
    }
    assert_eq!(s.live_count, distinct.len() as u64);
    assert_eq!(s.live_bytes, distinct.values().sum::<u64>());
    assert!(s.peak_bytes >= s.live_bytes);
    let labels = r.by_label();
    assert_eq!(
        labels.iter().map(|(_, l)| l.bytes).sum::<u64>(),
        s.live_bytes
    );
    assert_eq!(
        labels.iter().map(|(_, l)| l.count).sum::<u64>(),
        s.live_count
    );
    assert!(labels.iter().all(|(_, l)| l.peak_bytes >= l.bytes));
    let owners = r.by_owner();
    assert_eq!(
        owners.iter().map(|(_, o)| o.bytes).sum::<u64>(),
        s.live_bytes
    );
    let live = r.live(&LiveFilter::default());
    assert_eq!(live.len() as u64, s.live_count);
    assert_eq!(live.iter().map(|e| e.size).sum::<u64>(), s.live_bytes);
}

proptest! {
    // Under Miri: 8 cases (about 1000x slower), and no regression file (Miri isolates the
    // file system).
    #![proptest_config(if cfg!(miri) {
        ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig::with_cases(256)
    })]

    #[test]
    fn accounting_invariants_hold(ops in prop::collection::vec(op(), 1..120)) {
        let r: Registry<u8> = Registry::new();
        let mut held: Vec<Arc<Blob<u8>>> = Vec::new();
        let mut cap: Option<u64> = None;
        for op in ops {
            let before = r.stats();
            let result = match op {
                Op::Put { size, label: l, owner } => Some(r.put(&vec![1; size], label(l), owner).map(|b| (b, size as u64))),
                Op::Alloc { size, fill, label: l, owner } => Some(r.alloc(size, fill, label(l), owner).map(|b| {
                    assert!(b.bytes().iter().all(|x| *x == fill));
                    (b, size)
                })),
                Op::Intern { content, size, owner } => Some(r.intern(&vec![content; size], label(0), owner).map(|i| {
                    assert_eq!(i.blob.bytes(), &vec![content; size][..]);
                    (i.blob, size as u64)
                })),
                Op::Drop { index } => {
                    if !held.is_empty() { held.swap_remove(index % held.len()); }
                    None
                }
                Op::OwnerDown { owner } => { r.owner_down(&owner); None }
                Op::SetCapacity { cap: c } => { r.set_capacity(c); cap = c; None }
            };
            match result {
                Some(Ok((b, _))) => held.push(b),
                Some(Err(StoreError::Capacity)) => {
                    // Refused: nothing was allocated or counted.
                    let after = r.stats();
                    prop_assert_eq!(after.allocs, before.allocs);
                    prop_assert_eq!(after.live_bytes, before.live_bytes);
                }
                Some(Err(e)) => prop_assert!(false, "unexpected error {}", e),
                None => {}
            }
            if let Some(c) = cap {
                // Set before the allocation that could break it: live bytes only exceed the cap
                // when the cap was lowered below what was already live.
                let s = r.stats();
                prop_assert!(s.live_bytes <= c.max(before.live_bytes));
            }
            check_invariants(&r, &held);
        }
        held.clear();
        let s = r.stats();
        prop_assert_eq!((s.live_count, s.live_bytes), (0, 0));
        prop_assert!(r.by_owner().is_empty());
    }

    #[test]
    fn dedup_refcounts(contents in prop::collection::vec(0u8..5, 1..60)) {
        let r: Registry<u8> = Registry::new();
        let mut held = Vec::new();
        for c in &contents {
            held.push(r.intern(&[*c; 33], Label::default_label(), 0).unwrap());
        }
        let distinct: std::collections::HashSet<_> = contents.iter().collect();
        let s = r.stats();
        prop_assert_eq!(s.live_count, distinct.len() as u64);
        prop_assert_eq!(s.dedup_hits, (contents.len() - distinct.len()) as u64);
        prop_assert_eq!(s.dedup_saved_bytes, s.dedup_hits * 33);
        prop_assert_eq!(held.iter().filter(|i| !i.hit).count(), distinct.len());
        // Dropping holders one by one frees an entry exactly when its last holder goes.
        while let Some(i) = held.pop() {
            let still_held = held.iter().any(|h| Arc::ptr_eq(&h.blob, &i.blob));
            let before = r.stats().live_count;
            drop(i);
            prop_assert_eq!(r.stats().live_count, if still_held { before } else { before - 1 });
        }
    }
}

proptest! {
    #![proptest_config(if cfg!(miri) {
        ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig::with_cases(256)
    })]

    /// Labels are reclaimed with their last entry (issue 12, item 4): `by_label` lists exactly
    /// the labels that have live entries, with counts, bytes and a peak since the label last had
    /// nothing live, all as a model computes them.
    #[test]
    fn labels_are_reclaimed_with_their_last_entry(
        ops in prop::collection::vec((any::<bool>(), 0u8..12, 0usize..64, 0usize..40), 1..150)
    ) {
        let r: Registry<u8> = Registry::new();
        let mut held: Vec<(Arc<Blob<u8>>, u8)> = Vec::new();
        // label -> (count, bytes, peak)
        let mut model: HashMap<u8, (u64, u64, u64)> = HashMap::new();
        for (put, l, size, index) in ops {
            if put || held.is_empty() {
                let b = r.put(&vec![0; size], label(l), 0).unwrap();
                let m = model.entry(l).or_default();
                m.0 += 1;
                m.1 += size as u64;
                m.2 = m.2.max(m.1);
                held.push((b, l));
            } else {
                let (b, l) = held.swap_remove(index % held.len());
                let m = model.get_mut(&l).unwrap();
                m.0 -= 1;
                m.1 -= b.len() as u64;
                if m.0 == 0 {
                    model.remove(&l);
                }
                drop(b);
            }
            let got: HashMap<Label, (u64, u64, u64)> = r
                .by_label()
                .into_iter()
                .map(|(k, s)| (k, (s.count, s.bytes, s.peak_bytes)))
                .collect();
            let want: HashMap<Label, (u64, u64, u64)> =
                model.iter().map(|(&l, &m)| (label(l), m)).collect();
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(r.stats().label_count, want.len() as u64);
        }
        held.clear();
        prop_assert!(r.by_label().is_empty());
        prop_assert_eq!(r.stats().label_count, 0);
    }
}
