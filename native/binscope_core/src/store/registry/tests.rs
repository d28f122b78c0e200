use super::*;

fn reg() -> Registry<u32> {
    Registry::new()
}

#[test]
fn put_counts_and_release_restores_exactly() {
    let r = reg();
    let a = r.put(b"hello", Label::default_label(), 1).unwrap();
    let b = r.alloc(1000, 7, Label::atom("x"), 2).unwrap();
    assert_eq!(b.bytes(), &[7u8; 1000][..]);
    let s = r.stats();
    assert_eq!(
        (s.live_count, s.live_bytes, s.allocs, s.frees),
        (2, 1005, 2, 0)
    );
    drop(a);
    drop(b);
    let s = r.stats();
    assert_eq!(
        (s.live_count, s.live_bytes, s.frees, s.peak_bytes),
        (0, 0, 2, 1005)
    );
}

#[test]
fn contains_ids_follows_releases() {
    let r = reg();
    let a = r.put(b"a", Label::default_label(), 1).unwrap();
    let b = r.put(b"b", Label::default_label(), 1).unwrap();
    let (ia, ib) = (a.id(), b.id());
    drop(a);
    assert_eq!(r.contains_ids(&[ia, ib, 999]), vec![false, true, false]);
    drop(b);
}

#[test]
fn per_label_and_owner_accounting() {
    let r = reg();
    let _a = r.put(&[1; 10], Label::atom("img"), 1).unwrap();
    let _b = r.put(&[1; 20], Label::atom("img"), 2).unwrap();
    let c = r.put(&[1; 30], Label::text("img"), 2).unwrap();
    let labels: HashMap<_, _> = r.by_label().into_iter().collect();
    assert_eq!(labels[&Label::atom("img")].bytes, 30);
    assert_eq!(labels[&Label::text("img")].count, 1);
    let owners: HashMap<_, _> = r.by_owner().into_iter().collect();
    assert_eq!(owners[&2].bytes, 50);
    assert_eq!(labels[&Label::text("img")].peak_bytes, 30);
    drop(c);
    let labels: HashMap<_, _> = r.by_label().into_iter().collect();
    assert!(
        !labels.contains_key(&Label::text("img")),
        "a label is reclaimed with its last entry"
    );
    assert_eq!(labels[&Label::atom("img")].count, 2);
}

#[test]
fn capacity_refuses_without_allocating() {
    let r = reg();
    r.set_capacity(Some(100));
    let a = r.alloc(60, 0, Label::default_label(), 1).unwrap();
    assert_eq!(
        r.alloc(41, 0, Label::default_label(), 1).unwrap_err(),
        StoreError::Capacity
    );
    let _b = r.alloc(40, 0, Label::default_label(), 1).unwrap();
    let s = r.stats();
    assert_eq!((s.live_bytes, s.allocs, s.reserved_bytes), (100, 2, 0));
    drop(a);
    assert!(r.alloc(60, 0, Label::default_label(), 1).is_ok());
}

/// Regression (issue 12, item 5): with no capacity set, a 1 TiB zero-filled alloc succeeded
/// (lazily mapped) on a 24 GiB machine; a request over the memory limit is now refused.
#[test]
fn the_memory_limit_holds_without_a_capacity() {
    let r = reg();
    r.set_memory_limit(Some(1000));
    assert_eq!(
        r.alloc(1001, 0, Label::default_label(), 1).unwrap_err(),
        StoreError::Capacity
    );
    let a = r.alloc(600, 0, Label::default_label(), 1).unwrap();
    assert_eq!(
        r.alloc(401, 0, Label::default_label(), 1).unwrap_err(),
        StoreError::Capacity
    );
    // The lower of the two bounds applies.
    r.set_capacity(Some(700));
    assert_eq!(
        r.alloc(101, 0, Label::default_label(), 1).unwrap_err(),
        StoreError::Capacity
    );
    r.set_capacity(Some(5000));
    assert!(r.alloc(400, 0, Label::default_label(), 1).is_ok());
    let s = r.stats();
    assert_eq!(
        (s.memory_limit, s.live_bytes, s.reserved_bytes),
        (Some(1000), 600, 0)
    );
    drop(a);
}

#[test]
fn a_stopped_fill_counts_nothing() {
    let r = reg();
    let size = 2 * buffer::FILL_CHUNK as u64 + 1;
    let err = r.alloc_until(size, 3, Label::atom("gone"), 1, || false);
    assert_eq!(err.unwrap_err(), StoreError::Cancelled);
    let s = r.stats();
    assert_eq!(
        (s.allocs, s.live_bytes, s.reserved_bytes, s.label_count),
        (0, 0, 0, 0)
    );
    let ok = r
        .alloc_until(size, 3, Label::atom("kept"), 1, || true)
        .unwrap();
    assert_eq!(ok.len() as u64, size);
}

#[test]
fn intern_shares_one_allocation_while_any_holder_lives() {
    let r = reg();
    let a = r
        .intern(b"same content", Label::default_label(), 1)
        .unwrap();
    let b = r
        .intern(b"same content", Label::default_label(), 2)
        .unwrap();
    let c = r
        .intern(b"other content", Label::default_label(), 2)
        .unwrap();
    assert!(!a.hit && b.hit && !c.hit);
    assert!(Arc::ptr_eq(&a.blob, &b.blob));
    let s = r.stats();
    assert_eq!(
        (s.live_count, s.dedup_hits, s.dedup_saved_bytes),
        (2, 1, 12)
    );
    drop(a);
    assert_eq!(r.stats().live_count, 2, "b still holds the shared entry");
    drop(b);
    assert_eq!(r.stats().live_count, 1);
    let again = r
        .intern(b"same content", Label::default_label(), 1)
        .unwrap();
    assert!(!again.hit, "a released entry is not resurrected");
}

#[test]
fn intern_hit_is_allowed_at_capacity() {
    let r = reg();
    let a = r.intern(&[5; 64], Label::default_label(), 1).unwrap();
    r.set_capacity(Some(64));
    let b = r.intern(&[5; 64], Label::default_label(), 1).unwrap();
    assert!(b.hit);
    assert_eq!(
        r.intern(&[6; 64], Label::default_label(), 1).unwrap_err(),
        StoreError::Capacity
    );
    drop((a, b));
}

#[test]
fn owners_outlive_their_binaries_only_while_needed() {
    let r = reg();
    assert_eq!(r.watch_owner(&9), OwnerState::New);
    assert_eq!(r.watch_owner(&9), OwnerState::Alive);
    let a = r.put(b"x", Label::default_label(), 9).unwrap();
    r.owner_down(&9);
    assert_eq!(r.watch_owner(&9), OwnerState::Dead);
    let live = r.live(&LiveFilter::default());
    assert_eq!(live.len(), 1);
    assert!(!live[0].owner_alive);
    assert!(!r.by_owner()[0].1.alive);
    drop(a);
    assert!(r.by_owner().is_empty());
    assert_eq!(
        r.watch_owner(&9),
        OwnerState::New,
        "record dropped once empty"
    );
}

/// Above [`COPY_FIRST_MAX`]: the path that reserves before it copies.
const BIG: usize = COPY_FIRST_MAX as usize + 1;

/// Regression (found by review for issue 6): an owner that exits while its put is copying
/// outside the lock was recorded as alive again by the commit, with no monitor left to say
/// otherwise, and its record outlived its binaries (a later `watch_owner` said `Alive`).
#[test]
fn owner_dying_during_an_insert_stays_dead() {
    let r = reg();
    assert_eq!(r.watch_owner(&4), OwnerState::New);
    let blob = r
        .insert(BIG as u64, Label::default_label(), 4, None, || {
            // The copy runs outside the lock; the owner's monitor fires meanwhile.
            r.owner_down(&4);
            buffer::try_filled(BIG, 1)
        })
        .unwrap();
    assert_eq!(
        r.by_owner(),
        vec![(
            4,
            OwnerStats {
                count: 1,
                bytes: BIG as u64,
                alive: false
            }
        )]
    );
    assert!(!r.live(&LiveFilter::default())[0].owner_alive);
    assert_eq!(r.watch_owner(&4), OwnerState::Dead);
    drop(blob);
    assert!(r.by_owner().is_empty());
    assert_eq!(r.stats().owner_count, 0);
    assert_eq!(r.watch_owner(&4), OwnerState::New, "no record left behind");
}

#[test]
fn owner_dying_during_a_failed_insert_leaves_no_record() {
    let r = reg();
    assert_eq!(r.watch_owner(&4), OwnerState::New);
    let err = r.insert(BIG as u64, Label::default_label(), 4, None, || {
        r.owner_down(&4);
        None
    });
    assert_eq!(err.unwrap_err(), StoreError::AllocFailed);
    assert_eq!(r.watch_owner(&4), OwnerState::New, "no record left behind");
}

/// A small watched put copies before it locks: an owner whose monitor fires during the copy
/// is found gone under the lock, and the put fails with nothing counted and no record left.
#[test]
fn owner_dying_during_a_small_watched_put_counts_nothing() {
    let r = reg();
    let mut alive = true;
    let mut watch = |_: &u32| alive;
    let a = r
        .put_watched(b"a", Label::default_label(), 4, &mut watch)
        .unwrap();
    let err = r.insert(
        3,
        Label::default_label(),
        5,
        Some(&mut |_: &u32| false),
        || buffer::try_copy(b"abc"),
    );
    assert_eq!(err.unwrap_err(), StoreError::DeadOwner);
    // Owner 4 is watched already: no second watch; its death during the copy is seen.
    alive = false;
    let mut watch = |_: &u32| alive;
    let b = r.insert(3, Label::default_label(), 4, Some(&mut watch), || {
        r.owner_down(&4);
        buffer::try_copy(b"abc")
    });
    assert_eq!(b.unwrap_err(), StoreError::DeadOwner);
    let s = r.stats();
    assert_eq!((s.allocs, s.live_count, s.live_bytes), (1, 1, 1));
    drop(a);
    assert!(r.by_owner().is_empty());
    assert_eq!(r.watch_owner(&5), OwnerState::New, "no record left behind");
}

/// The owner monitor is started once per owner, not once per put, and never for a known one.
#[test]
fn watched_owners_are_watched_once() {
    let r = reg();
    let calls = std::cell::Cell::new(0);
    let mut watch = |_: &u32| {
        calls.set(calls.get() + 1);
        true
    };
    let held: Vec<_> = (0..100)
        .map(|i| {
            let size = if i % 2 == 0 { 10 } else { BIG };
            r.put_watched(&vec![1; size], Label::default_label(), 7, &mut watch)
                .unwrap()
        })
        .collect();
    let _i = r
        .intern_watched(b"x", Label::default_label(), 7, &mut watch)
        .unwrap();
    let _a = r
        .alloc_watched(5, 0, Label::default_label(), 7, &mut watch, || true)
        .unwrap();
    assert_eq!(calls.get(), 1);
    r.owner_down(&7);
    let refused = r.put_watched(b"y", Label::default_label(), 7, &mut watch);
    assert_eq!(refused.unwrap_err(), StoreError::DeadOwner);
    assert_eq!(r.stats().live_count, 102);
    drop(held);
}

#[test]
fn live_filters_and_limits_oldest_first() {
    let r = reg();
    let held: Vec<_> = (0..10)
        .map(|i| {
            let label = if i % 2 == 0 { "even" } else { "odd" };
            r.put(&[0; 8], Label::atom(label), i % 3).unwrap()
        })
        .collect();
    let f = LiveFilter {
        label: Some(Label::atom("even")),
        limit: Some(3),
        ..LiveFilter::default()
    };
    let ids: Vec<u64> = r.live(&f).iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![held[0].id(), held[2].id(), held[4].id()]);
    let by_owner = LiveFilter {
        owner: Some(1),
        ..LiveFilter::default()
    };
    assert_eq!(r.live(&by_owner).len(), 3);
    let old = LiveFilter {
        older_than: Some(std::time::Duration::from_secs(3600)),
        ..LiveFilter::default()
    };
    assert!(r.live(&old).is_empty());
}

#[test]
fn caller_errors_are_refused_before_counting() {
    let r = reg();
    assert_eq!(
        r.alloc(MAX_BINARY_SIZE + 1, 0, Label::default_label(), 1)
            .unwrap_err(),
        StoreError::TooLarge
    );
    let long = "x".repeat(MAX_LABEL_BYTES + 1);
    assert_eq!(
        r.put(b"a", Label::text(&long), 1).unwrap_err(),
        StoreError::LabelTooLong
    );
    assert_eq!(r.stats(), Stats::default());
}

#[test]
#[cfg_attr(
    miri,
    ignore = "Miri stops with resource exhaustion instead of returning null for 1 TiB"
)]
fn allocation_failure_releases_the_reservation() {
    let r = reg();
    // Within MAX_BINARY_SIZE but far above any machine's memory with overcommit heuristics.
    let err = r.alloc(MAX_BINARY_SIZE, 1, Label::default_label(), 1);
    assert_eq!(err.unwrap_err(), StoreError::AllocFailed);
    let s = r.stats();
    assert_eq!((s.reserved_bytes, s.allocs, s.live_bytes), (0, 0, 0));
}

#[test]
fn tables_shrink_after_a_burst() {
    let r = reg();
    // Fewer under Miri (about 1000x slower); still well above the 1024-slot floor.
    let n: u32 = if cfg!(miri) { 2_000 } else { 100_000 };
    let held: Vec<_> = (0..n)
        .map(|i| {
            r.intern(&i.to_le_bytes(), Label::default_label(), 1)
                .unwrap()
        })
        .collect();
    let grown = r.shared.lock().dedup.capacity();
    drop(held);
    let cap = r.shared.lock().dedup.capacity();
    assert!(cap <= 2048, "{cap} of {grown}");
}

#[test]
fn live_walks_in_chunks_and_stops_at_the_limit() {
    let r = reg();
    let held: Vec<_> = (0..3 * LIVE_CHUNK + 5)
        .map(|i| {
            r.put(&[0; 3], Label::atom(if i % 2 == 0 { "a" } else { "b" }), 1)
                .unwrap()
        })
        .collect();
    let all = r.live(&LiveFilter::default());
    assert_eq!(all.len(), held.len());
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    let b = LiveFilter {
        label: Some(Label::atom("b")),
        ..LiveFilter::default()
    };
    assert_eq!(r.live(&b).len(), held.len() / 2);
    let first = LiveFilter {
        limit: Some(LIVE_CHUNK + 1),
        ..LiveFilter::default()
    };
    let ids: Vec<u64> = r.live(&first).iter().map(|e| e.id).collect();
    let want: Vec<u64> = held[..LIVE_CHUNK + 1].iter().map(|b| b.id()).collect();
    assert_eq!(ids, want);
}

#[test]
fn label_limit_holds() {
    let r = reg();
    let mut held = Vec::new();
    for i in 0..MAX_LABELS {
        held.push(r.put(b"", Label::text(&i.to_string()), 1).unwrap());
    }
    assert_eq!(
        r.put(b"", Label::text("one more"), 1).unwrap_err(),
        StoreError::LabelLimit
    );
    assert!(
        r.put(b"", Label::text("7"), 1).is_ok(),
        "known labels still work"
    );
    let default = r.put(b"", Label::default_label(), 1);
    assert!(default.is_ok(), "the default label is never refused");
    assert_eq!(r.stats().label_count, MAX_LABELS as u64 + 1);
}

/// Regression (issue 12, item 4): after MAX_LABELS distinct labels had been used once, every
/// put failed with `LabelLimit` forever, even with nothing live and for the default label.
#[test]
fn dead_labels_are_reclaimed() {
    let r = reg();
    for i in 0..MAX_LABELS + 10 {
        let b = r.put(b"x", Label::text(&i.to_string()), 1).unwrap();
        drop(b);
    }
    assert_eq!(r.stats().label_count, 0);
    assert!(r.by_label().is_empty());
    let a = r.put(b"abc", Label::text("reused"), 1).unwrap();
    let b = r.put(b"abcdef", Label::text("reused"), 1).unwrap();
    drop((a, b));
    assert!(r.put(b"zz", Label::default_label(), 1).is_ok());
    // A reused label's peak starts again from zero.
    let c = r.put(b"a", Label::text("reused"), 1).unwrap();
    let labels: HashMap<_, _> = r.by_label().into_iter().collect();
    assert_eq!(
        labels[&Label::text("reused")],
        LabelStats {
            count: 1,
            bytes: 1,
            peak_bytes: 1
        }
    );
    drop(c);
}

/// A label with a reservation in flight is not reclaimed under it, and a failed
/// allocation leaves no label behind.
#[test]
fn labels_in_flight_survive_and_failures_leave_none() {
    let r = reg();
    let a = r.put(&[1; BIG + 5], Label::atom("busy"), 1).unwrap();
    let b = r
        .insert(BIG as u64, Label::atom("busy"), 1, None, || {
            drop(a);
            buffer::try_filled(BIG, 1)
        })
        .unwrap();
    let labels: HashMap<_, _> = r.by_label().into_iter().collect();
    assert_eq!(labels[&Label::atom("busy")].count, 1);
    assert_eq!(
        labels[&Label::atom("busy")].peak_bytes,
        BIG as u64 + 5,
        "kept (with its peak) while the insert was in flight"
    );
    drop(b);
    let err = r.insert(BIG as u64, Label::atom("never"), 1, None, || None);
    assert_eq!(err.unwrap_err(), StoreError::AllocFailed);
    assert!(r.by_label().is_empty());
    assert_eq!(r.stats().label_count, 0);
}

fn watch_all() -> impl FnMut(&u32) -> bool {
    |_| true
}

#[test]
fn a_put_copied_in_steps_counts_as_one_put_once_committed() {
    let r = reg();
    let src: Vec<u8> = (0..3 * buffer::COPY_STEP + 5).map(|i| i as u8).collect();
    let mut p = r
        .begin_put_watched(src.len(), Label::atom("steps"), 1, &mut watch_all())
        .unwrap();
    // Reserved from the start, nothing live until committed.
    let s = r.stats();
    assert_eq!((s.live_count, s.reserved_bytes), (0, src.len() as u64));
    // Stops where told (one step per call here), then goes on where it stopped.
    assert!(!p.copy_from(&src, || false));
    assert_eq!(p.written(), buffer::COPY_STEP);
    let p = p.commit().expect_err("an unfinished copy does not commit");
    let mut p = p;
    let mut asked = 0;
    assert!(p.copy_from(&src, || {
        asked += 1;
        true
    }));
    assert_eq!(asked, 2, "asked before every step but the first");
    let blob = p.commit().unwrap();
    assert_eq!(blob.bytes(), &src[..]);
    let s = r.stats();
    assert_eq!(
        (s.live_count, s.live_bytes, s.reserved_bytes, s.allocs),
        (1, src.len() as u64, 0, 1)
    );
    let l = r.by_label();
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].1.count, l[0].1.bytes), (1, src.len() as u64));
    drop(blob);
    let s = r.stats();
    assert_eq!((s.live_count, s.live_bytes, s.frees), (0, 0, 1));
}

#[test]
fn a_fill_in_steps_counts_as_one_entry_with_every_byte_set() {
    let r = reg();
    let len = 2 * buffer::COPY_STEP + 3;
    let mut p = r
        .begin_put_watched(len, Label::atom("filled"), 1, &mut watch_all())
        .unwrap();
    assert!(!p.fill_with(7, || false));
    assert_eq!(p.written(), buffer::COPY_STEP);
    let mut p = p.commit().expect_err("an unfinished fill does not commit");
    assert!(p.fill_with(7, || true));
    let blob = p.commit().unwrap();
    assert!(blob.bytes().iter().all(|&b| b == 7));
    assert_eq!(blob.bytes().len(), len);
    let s = r.stats();
    assert_eq!(
        (s.live_count, s.live_bytes, s.reserved_bytes, s.allocs),
        (1, len as u64, 0, 1)
    );
}

#[test]
fn an_abandoned_put_gives_its_reservation_back_and_counts_nothing() {
    let r = reg();
    r.set_capacity(Some(300_000));
    let src = vec![9u8; 200_000];
    let mut p = r
        .begin_put_watched(src.len(), Label::atom("gone"), 7, &mut watch_all())
        .unwrap();
    p.copy_from(&src, || false);
    // The capacity counts the unfinished put.
    assert_eq!(
        r.put(&[0u8; 100_001], Label::default_label(), 1)
            .unwrap_err(),
        StoreError::Capacity
    );
    drop(p);
    let s = r.stats();
    assert_eq!(
        (s.live_count, s.reserved_bytes, s.allocs, s.frees),
        (0, 0, 0, 0)
    );
    assert!(r.by_label().is_empty(), "the label is reclaimed");
    r.owner_down(&7);
    assert!(r.by_owner().is_empty(), "the dead owner's record goes");
    assert!(r.put(&[0u8; 300_000], Label::default_label(), 1).is_ok());
}

#[test]
fn a_put_in_steps_is_refused_like_a_put() {
    let r = reg();
    r.set_capacity(Some(10));
    assert_eq!(
        r.begin_put_watched(11, Label::default_label(), 1, &mut watch_all())
            .unwrap_err(),
        StoreError::Capacity
    );
    assert_eq!(
        r.begin_put_watched(5, Label::default_label(), 2, &mut |_| false)
            .unwrap_err(),
        StoreError::DeadOwner
    );
    let s = r.stats();
    assert_eq!((s.reserved_bytes, s.allocs), (0, 0));
    // An empty put completes at its first copy.
    let mut p = r
        .begin_put_watched(0, Label::default_label(), 1, &mut watch_all())
        .unwrap();
    assert!(p.copy_from(&[], || unreachable!("no step to ask before")));
    assert!(p.commit().unwrap().bytes().is_empty());
}
