#![no_main]
//! `store_ops`: the fuzz input is a sequence of operations on one `Registry`; after every operation
//! the registry's answers are compared with a plain model kept beside it.
//!
//! Checked after each operation (exact equality, not bounds):
//! - `stats()`: live count and bytes equal the distinct blobs held, `allocs - frees == live_count`,
//!   peak, reserved (0), capacity, dedup hits and saved bytes, label and owner counts;
//! - `by_label()` and `by_owner()` equal the model's tables (and are sorted as documented);
//! - `live()` lists exactly the held allocations, oldest first, with their size, label, owner,
//!   owner liveness and interned flag;
//! - every held `Arc<Blob>` has as many strong references as the model has handles to it (the
//!   registry only keeps weak ones);
//! - a new allocation is refused with `Capacity` exactly when it would take live bytes over the
//!   capacity, so the capacity is never exceeded by an allocation;
//! - an intern hits exactly when identical content is live, and returns that very allocation;
//! - caller errors (too large, label too long) change nothing.
//!
//! Blob contents are checked when created and again just before each handle is dropped. At the end
//! every handle is dropped and all counters must be back to zero (and every label reclaimed).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use binscope_core::store::{
    Blob, Label, LabelStats, LiveFilter, OwnerState, OwnerStats, Registry, MAX_BINARY_SIZE,
    MAX_LABEL_BYTES,
};
use binscope_core::StoreError;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

type Owner = u8;

/// Few owners and labels so that operations collide on them.
const OWNERS: u8 = 5;

#[derive(Arbitrary, Debug)]
enum Op {
    Put {
        len: u16,
        byte: u8,
        label: u8,
        owner: u8,
    },
    PutBytes {
        bytes: Vec<u8>,
        label: u8,
        owner: u8,
    },
    Alloc {
        size: u16,
        fill: u8,
        label: u8,
        owner: u8,
    },
    /// Content from a small space (8 seeds x 256 lengths) so that interns hit.
    Intern {
        seed: u8,
        len: u8,
        label: u8,
        owner: u8,
    },
    InternBytes {
        bytes: Vec<u8>,
        label: u8,
        owner: u8,
    },
    /// A size above `MAX_BINARY_SIZE` (never allocated).
    TooLarge {
        over: u64,
        label: u8,
        owner: u8,
    },
    /// A label longer than `MAX_LABEL_BYTES`, through put, alloc or intern.
    LongLabel {
        over: u8,
        how: u8,
        owner: u8,
    },
    Clone {
        index: u16,
    },
    Drop {
        index: u16,
    },
    DropOwner {
        owner: u8,
    },
    WatchOwner {
        owner: u8,
    },
    OwnerDown {
        owner: u8,
    },
    SetCapacity {
        cap: Option<u32>,
    },
    Live {
        label: Option<u8>,
        owner: Option<u8>,
        limit: Option<u16>,
        old: bool,
    },
}

fn label(i: u8) -> Label {
    match i % 10 {
        0 => Label::default_label(),
        n @ 1..=4 => Label::atom(&format!("l{n}")),
        // The same texts as strings: different labels.
        n @ 5..=8 => Label::text(&format!("l{}", n - 4)),
        _ => Label::text(&"x".repeat(MAX_LABEL_BYTES)),
    }
}

fn owner(o: u8) -> Owner {
    o % OWNERS
}

fn pattern(seed: u8, len: u8) -> Vec<u8> {
    let seed = seed % 8;
    (0..len)
        .map(|i| seed.wrapping_mul(37).wrapping_add(i))
        .collect()
}

/// What a blob must contain.
#[derive(Debug, Clone)]
enum Content {
    Fill(u8, usize),
    Bytes(Vec<u8>),
}

impl Content {
    fn matches(&self, b: &[u8]) -> bool {
        match self {
            Content::Fill(f, n) => b.len() == *n && b.iter().all(|x| x == f),
            Content::Bytes(v) => v.as_slice() == b,
        }
    }
}

struct Entry {
    size: u64,
    label: Label,
    owner: Owner,
    content: Content,
    interned: bool,
    /// Handles to this allocation in `Model::held`.
    holders: usize,
}

#[derive(Default)]
struct Model {
    held: Vec<Arc<Blob<Owner>>>,
    entries: BTreeMap<u64, Entry>,
    /// Owner records: present while watched and not yet down, or while the owner holds entries.
    owners: HashMap<Owner, bool>,
    /// Every label with live entries, with its peak bytes since it last had none (a label is
    /// reclaimed with its last entry).
    label_peaks: HashMap<Label, u64>,
    cap: Option<u64>,
    peak: u64,
    allocs: u64,
    frees: u64,
    hits: u64,
    saved: u64,
}

impl Model {
    fn live_bytes(&self) -> u64 {
        self.entries.values().map(|e| e.size).sum()
    }

    fn owner_totals(&self, o: Owner) -> (u64, u64) {
        self.entries
            .values()
            .filter(|e| e.owner == o)
            .fold((0, 0), |(c, b), e| (c + 1, b + e.size))
    }

    fn label_totals(&self, l: &Label) -> (u64, u64) {
        self.entries
            .values()
            .filter(|e| &e.label == l)
            .fold((0, 0), |(c, b), e| (c + 1, b + e.size))
    }

    /// The answer a new (non-hit) allocation of `size` must get.
    fn expect_room(&self, size: u64) -> Result<(), StoreError> {
        match self.cap {
            Some(c) if self.live_bytes() + size > c => Err(StoreError::Capacity),
            _ => Ok(()),
        }
    }

    /// Records a new allocation the registry just made.
    fn created(
        &mut self,
        blob: Arc<Blob<Owner>>,
        label: Label,
        owner: Owner,
        content: Content,
        interned: bool,
    ) {
        let id = blob.id();
        assert!(
            self.entries
                .keys()
                .next_back()
                .is_none_or(|last| *last < id),
            "ids grow with creation order"
        );
        assert!(
            content.matches(blob.bytes()),
            "new blob {id} has the wrong bytes"
        );
        let size = blob.len() as u64;
        self.entries.insert(
            id,
            Entry {
                size,
                label: label.clone(),
                owner,
                content,
                interned,
                holders: 1,
            },
        );
        self.held.push(blob);
        self.allocs += 1;
        self.owners.entry(owner).or_insert(true);
        let (_, label_bytes) = self.label_totals(&label);
        let peak = self.label_peaks.entry(label).or_insert(0);
        *peak = (*peak).max(label_bytes);
        self.peak = self.peak.max(self.live_bytes());
    }

    fn drop_handle(&mut self, index: usize) {
        let blob = self.held.swap_remove(index);
        let id = blob.id();
        let e = self.entries.get_mut(&id).expect("held blob has an entry");
        assert!(
            e.content.matches(blob.bytes()),
            "blob {id} changed its bytes"
        );
        e.holders -= 1;
        let last = e.holders == 0;
        let o = e.owner;
        let label = e.label.clone();
        drop(blob);
        if last {
            self.entries.remove(&id);
            self.frees += 1;
            if self.label_totals(&label).0 == 0 {
                self.label_peaks.remove(&label);
            }
            if self.owners.get(&o) == Some(&false) && self.owner_totals(o).0 == 0 {
                self.owners.remove(&o);
            }
        }
    }

    fn refused_nothing_changed(&self, r: &Registry<Owner>, before: &binscope_core::store::Stats) {
        assert_eq!(&r.stats(), before, "a refused request changed the counters");
    }
}

fn check(r: &Registry<Owner>, m: &Model) {
    let s = r.stats();
    let live_bytes = m.live_bytes();
    assert_eq!(s.live_count, m.entries.len() as u64, "live_count");
    assert_eq!(s.live_bytes, live_bytes, "live_bytes == sum of held blobs");
    assert_eq!(s.live_count, s.allocs - s.frees, "live = allocs - frees");
    assert_eq!((s.allocs, s.frees), (m.allocs, m.frees));
    assert_eq!(s.peak_bytes, m.peak, "peak_bytes");
    assert_eq!(s.reserved_bytes, 0, "nothing in flight");
    assert_eq!(s.capacity, m.cap);
    assert_eq!((s.dedup_hits, s.dedup_saved_bytes), (m.hits, m.saved));
    assert_eq!(s.label_count, m.label_peaks.len() as u64, "label_count");
    let holding: Vec<Owner> = (0..OWNERS).filter(|o| m.owner_totals(*o).0 > 0).collect();
    assert_eq!(s.owner_count, holding.len() as u64, "owner_count");

    for b in &m.held {
        assert_eq!(
            Arc::strong_count(b),
            m.entries[&b.id()].holders,
            "the registry keeps no strong reference"
        );
    }

    let by_label = r.by_label();
    assert!(
        by_label.windows(2).all(|w| w[0].1.bytes >= w[1].1.bytes),
        "by_label order"
    );
    let got: HashMap<Label, LabelStats> = by_label.into_iter().collect();
    let want: HashMap<Label, LabelStats> = m
        .label_peaks
        .iter()
        .map(|(l, peak)| {
            let (count, bytes) = m.label_totals(l);
            (
                l.clone(),
                LabelStats {
                    count,
                    bytes,
                    peak_bytes: *peak,
                },
            )
        })
        .collect();
    assert_eq!(got, want, "by_label");

    let by_owner = r.by_owner();
    assert!(
        by_owner.windows(2).all(|w| w[0].1.bytes >= w[1].1.bytes),
        "by_owner order"
    );
    let got: HashMap<Owner, OwnerStats> = by_owner.into_iter().collect();
    let want: HashMap<Owner, OwnerStats> = holding
        .iter()
        .map(|o| {
            let (count, bytes) = m.owner_totals(*o);
            let alive = m.owners[o];
            (
                *o,
                OwnerStats {
                    count,
                    bytes,
                    alive,
                },
            )
        })
        .collect();
    assert_eq!(got, want, "by_owner");

    check_live(r, m, &LiveFilter::default());
}

fn check_live(r: &Registry<Owner>, m: &Model, f: &LiveFilter<Owner>) {
    let got = r.live(f);
    let limit = f.limit.unwrap_or(usize::MAX);
    let want: Vec<(&u64, &Entry)> = m
        .entries
        .iter()
        .filter(|(_, e)| {
            f.label.as_ref().is_none_or(|l| *l == e.label)
                && f.owner.is_none_or(|o| o == e.owner)
                && f.older_than.is_none()
        })
        .take(limit)
        .collect();
    assert_eq!(got.len(), want.len(), "live() length for {f:?}");
    for (g, (id, e)) in got.iter().zip(want) {
        assert_eq!(g.id, *id);
        assert_eq!(g.size, e.size);
        assert_eq!(g.label, e.label);
        assert_eq!(g.owner, e.owner);
        assert_eq!(g.interned, e.interned);
        assert_eq!(
            g.owner_alive,
            m.owners.get(&e.owner) == Some(&true),
            "owner_alive of {id}"
        );
    }
}

/// What a put, alloc or intern miss asked for.
struct Request {
    size: u64,
    label: Label,
    owner: Owner,
    content: Content,
    interned: bool,
}

/// A new allocation (put/alloc/miss) or its refusal, checked against the model.
fn expect_new(
    r: &Registry<Owner>,
    m: &mut Model,
    result: Result<Arc<Blob<Owner>>, StoreError>,
    before: &binscope_core::store::Stats,
    req: Request,
) {
    let Request {
        size,
        label,
        owner,
        content,
        interned,
    } = req;
    let expected = m.expect_room(size);
    match (result, expected) {
        (Ok(blob), Ok(())) => {
            assert_eq!(blob.len() as u64, size);
            m.created(blob, label, owner, content, interned);
            if let Some(c) = m.cap {
                assert!(
                    m.live_bytes() <= c,
                    "an allocation took live bytes over the capacity"
                );
            }
        }
        (Err(StoreError::Capacity), Err(StoreError::Capacity)) => {
            m.refused_nothing_changed(r, before)
        }
        (got, want) => panic!("{size} bytes under {:?}: got {got:?}, want {want:?}", m.cap),
    }
}

fn intern(r: &Registry<Owner>, m: &mut Model, bytes: Vec<u8>, l: Label, o: Owner) {
    let before = r.stats();
    let existing = m
        .held
        .iter()
        .find(|b| {
            let e = &m.entries[&b.id()];
            e.interned && b.bytes() == bytes.as_slice()
        })
        .cloned();
    let result = r.intern(&bytes, l.clone(), o);
    match existing {
        Some(old) => {
            let i = result.expect("a hit is allowed even at capacity");
            assert!(i.hit, "identical live content must be a hit");
            assert!(
                Arc::ptr_eq(&i.blob, &old),
                "a hit returns the live allocation"
            );
            assert_eq!(
                i.blob.bytes(),
                bytes.as_slice(),
                "dedup returns identical content"
            );
            m.entries.get_mut(&old.id()).unwrap().holders += 1;
            m.held.push(i.blob);
            m.hits += 1;
            m.saved += bytes.len() as u64;
        }
        None => {
            let size = bytes.len() as u64;
            let result = result.map(|i| {
                assert!(!i.hit, "no identical live content: must allocate");
                i.blob
            });
            let req = Request {
                size,
                label: l,
                owner: o,
                content: Content::Bytes(bytes),
                interned: true,
            };
            expect_new(r, m, result, &before, req);
        }
    }
}

fn run(ops: Vec<Op>) {
    let r: Registry<Owner> = Registry::new();
    let mut m = Model::default();
    let mut interned_once: Option<Vec<u8>> = None;
    for op in ops {
        let before = r.stats();
        match op {
            Op::Put {
                len,
                byte,
                label: l,
                owner: o,
            } => {
                let (l, o, n) = (label(l), owner(o), len as usize);
                let res = r.put(&vec![byte; n], l.clone(), o);
                let req = Request {
                    size: n as u64,
                    label: l,
                    owner: o,
                    content: Content::Fill(byte, n),
                    interned: false,
                };
                expect_new(&r, &mut m, res, &before, req);
            }
            Op::PutBytes {
                bytes,
                label: l,
                owner: o,
            } => {
                let (l, o) = (label(l), owner(o));
                let res = r.put(&bytes, l.clone(), o);
                let size = bytes.len() as u64;
                let req = Request {
                    size,
                    label: l,
                    owner: o,
                    content: Content::Bytes(bytes),
                    interned: false,
                };
                expect_new(&r, &mut m, res, &before, req);
            }
            Op::Alloc {
                size,
                fill,
                label: l,
                owner: o,
            } => {
                let (l, o) = (label(l), owner(o));
                let res = r.alloc(size as u64, fill, l.clone(), o);
                let req = Request {
                    size: u64::from(size),
                    label: l,
                    owner: o,
                    content: Content::Fill(fill, size as usize),
                    interned: false,
                };
                expect_new(&r, &mut m, res, &before, req);
            }
            Op::Intern {
                seed,
                len,
                label: l,
                owner: o,
            } => {
                let bytes = pattern(seed, len);
                interned_once.get_or_insert_with(|| bytes.clone());
                intern(&r, &mut m, bytes, label(l), owner(o));
            }
            Op::InternBytes {
                bytes,
                label: l,
                owner: o,
            } => {
                interned_once.get_or_insert_with(|| bytes.clone());
                intern(&r, &mut m, bytes, label(l), owner(o));
            }
            Op::TooLarge {
                over,
                label: l,
                owner: o,
            } => {
                let size = (MAX_BINARY_SIZE + 1).saturating_add(over);
                let err = r.alloc(size, 1, label(l), owner(o)).unwrap_err();
                assert_eq!(err, StoreError::TooLarge);
                assert!(err.is_caller_error());
                m.refused_nothing_changed(&r, &before);
            }
            Op::LongLabel {
                over,
                how,
                owner: o,
            } => {
                let long = Label::text(&"y".repeat(MAX_LABEL_BYTES + 1 + over as usize));
                let err = match how % 3 {
                    0 => r.put(b"abc", long, owner(o)).unwrap_err(),
                    1 => r.alloc(3, 0, long, owner(o)).unwrap_err(),
                    _ => r.intern(b"abc", long, owner(o)).unwrap_err(),
                };
                assert_eq!(err, StoreError::LabelTooLong);
                m.refused_nothing_changed(&r, &before);
            }
            Op::Clone { index } => {
                if !m.held.is_empty() {
                    let b = Arc::clone(&m.held[index as usize % m.held.len()]);
                    m.entries.get_mut(&b.id()).unwrap().holders += 1;
                    m.held.push(b);
                }
            }
            Op::Drop { index } => {
                if !m.held.is_empty() {
                    let i = index as usize % m.held.len();
                    m.drop_handle(i);
                }
            }
            Op::DropOwner { owner: o } => {
                let o = owner(o);
                while let Some(i) = m.held.iter().position(|b| m.entries[&b.id()].owner == o) {
                    m.drop_handle(i);
                }
            }
            Op::WatchOwner { owner: o } => {
                let o = owner(o);
                let want = match m.owners.get(&o) {
                    Some(true) => OwnerState::Alive,
                    Some(false) => OwnerState::Dead,
                    None => {
                        m.owners.insert(o, true);
                        OwnerState::New
                    }
                };
                assert_eq!(r.watch_owner(&o), want, "watch_owner({o})");
            }
            Op::OwnerDown { owner: o } => {
                let o = owner(o);
                r.owner_down(&o);
                if let Some(alive) = m.owners.get_mut(&o) {
                    *alive = false;
                    if m.owner_totals(o).0 == 0 {
                        m.owners.remove(&o);
                    }
                }
            }
            Op::SetCapacity { cap } => {
                let cap = cap.map(u64::from);
                r.set_capacity(cap);
                m.cap = cap;
            }
            Op::Live {
                label: l,
                owner: o,
                limit,
                old,
            } => {
                let f = LiveFilter {
                    label: l.map(label),
                    owner: o.map(owner),
                    // Nothing in a fuzz run is an hour old.
                    older_than: old.then(|| Duration::from_secs(3600)),
                    limit: limit.map(usize::from),
                };
                check_live(&r, &m, &f);
            }
        }
        check(&r, &m);
    }

    // Everything dropped: every counter back to zero, every label reclaimed.
    while !m.held.is_empty() {
        m.drop_handle(m.held.len() - 1);
    }
    check(&r, &m);
    let s = r.stats();
    assert_eq!(
        (s.live_count, s.live_bytes, s.reserved_bytes, s.owner_count),
        (0, 0, 0, 0)
    );
    assert_eq!(s.allocs, s.frees);
    assert!(r.by_owner().is_empty());
    assert!(r.live(&LiveFilter::default()).is_empty());
    assert!(r.by_label().is_empty());
    assert_eq!(s.label_count, 0);
    // The dedup index forgot released content: interning it again allocates.
    if let Some(bytes) = interned_once {
        r.set_capacity(None);
        let i = r.intern(&bytes, Label::default_label(), 0).unwrap();
        assert!(!i.hit, "released content must not be resurrected");
        drop(i);
        let s = r.stats();
        assert_eq!((s.live_count, s.live_bytes), (0, 0));
    }
}

fuzz_target!(|ops: Vec<Op>| run(ops));
