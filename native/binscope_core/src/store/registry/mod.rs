//! The registry: one mutex over all counters, so every snapshot is consistent and the capacity is
//! exact under concurrency. Copies and hashing happen outside the lock; only bookkeeping is inside.
//!
//! The mutex is parking_lot's: it is eventually fair (a forced hand-off about every 0.5 ms), so
//! a long walk or a burst of releases cannot starve a caller on a normal scheduler, which std's
//! mutex allowed (measured: 47 ms waits while `live/1` walked 300k entries).
//!
//! Releases never wait for the lock: a `Blob` drop (in a resource destructor, which a scheduler
//! runs) queues its id and applies the queue only if the lock is free; the next lock holder
//! applies it otherwise (see `Shared::released`). Still, code that upgrades weak references under the lock hands the strong
//! ones out and drops them after unlocking, so releases are applied promptly.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, MutexGuard};
use xxhash_rust::xxh3::xxh3_128;

use super::clock::{self, Stamp};
use super::hash::FastMap;
use super::space::{self, Space, SpaceProbe};
use super::stats::{LabelStats, LiveEntry, LiveFilter, OwnerStats, Stats};
use super::{buffer, Blob, Label, Owner, MAX_BINARY_SIZE, MAX_LABELS, MAX_LABEL_BYTES};
use crate::StoreError;

/// A thread-safe registry of native binaries. Clones share the same state.
pub struct Registry<O: Owner> {
    shared: Arc<Shared<O>>,
}

impl<O: Owner> Clone for Registry<O> {
    fn clone(&self) -> Self {
        Registry {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<O: Owner> Default for Registry<O> {
    fn default() -> Self {
        Self::new()
    }
}

/// The result of [`Registry::intern`].
#[derive(Debug)]
pub struct Interned<O: Owner> {
    pub blob: Arc<Blob<O>>,
    /// True when existing content answered the request and nothing was allocated.
    pub hit: bool,
}

/// What [`Registry::watch_owner`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// First sight of this owner: it is now tracked as alive and the caller must start a monitor
    /// (and call [`Registry::owner_down`] if the monitor reports the process already dead).
    New,
    /// Already tracked and alive (a monitor is in place).
    Alive,
    /// Known to have exited.
    Dead,
}

pub(super) struct Shared<O: Owner> {
    state: Mutex<State<O>>,
    /// Ids of blobs whose last holder is gone but whose entries are not yet removed. A `Blob` drop
    /// runs in a resource destructor on a scheduler thread (the VM runs it as that scheduler's aux
    /// work), where waiting for the registry lock would hold the scheduler; it queues its id here
    /// instead (an O(1) hold of a lock
    /// nobody holds for long), and whoever takes the registry lock next applies the queue first.
    /// Every reader goes through [`Shared::lock`], so what anyone observes is always exact.
    released: Mutex<Vec<u64>>,
    /// Whether `released` may be non-empty: lock holders skip the queue's lock when it is not.
    /// Set (under the queue's lock) after a push, cleared (under it) when the queue is taken.
    pending: AtomicBool,
    /// Admission against the memory the process may still map (see `space`).
    space: Space,
}

struct Entry<O> {
    size: u64,
    label: Label,
    owner: O,
    created: Stamp,
    dedup_key: Option<u128>,
}

/// A tracked label: its counters and the reservations in flight under it (which keep it from
/// being reclaimed before their commit).
#[derive(Default)]
struct LabelSlot {
    stats: LabelStats,
    in_flight: u32,
}

impl LabelSlot {
    fn unused(&self) -> bool {
        self.stats.count == 0 && self.in_flight == 0
    }
}

/// An interned allocation as the dedup index knows it: its id and a weak handle.
type InternedRef<O> = (u64, Weak<Blob<O>>);

struct State<O: Owner> {
    next_id: u64,
    /// Keyed by id, which grows with creation order: iteration is oldest first and can resume
    /// from any id, so long walks release the lock between chunks. Entries are boxed: removing
    /// the oldest entry of a leaf shifts the others, and shifting pointers instead of 112-byte
    /// entries took a put-and-release cycle of 1 KiB from 350 to 290 ns (criterion `put_cycle`).
    entries: BTreeMap<u64, Box<Entry<O>>>,
    /// Labels with live entries or reservations in flight. A label whose last entry is released
    /// (and that has nothing in flight) is removed, so dead labels never fill [`MAX_LABELS`].
    labels: FastMap<Label, LabelSlot>,
    owners: FastMap<O, OwnerStats>,
    /// Reservations in flight per owner. While an owner has one, `owner_down` keeps its record
    /// (marked dead) so the commit counts under it instead of recreating it as alive.
    in_flight: FastMap<O, u32>,
    /// Content hash -> live interned allocations with that hash (more than one only on a collision).
    dedup: HashMap<u128, Vec<InternedRef<O>>>,
    counters: Stats,
}

impl<O: Owner> Registry<O> {
    /// A registry with no memory probe: only the payload allocation itself can fail.
    pub fn new() -> Self {
        Self::with_space_probe(space::unlimited)
    }

    /// A registry that admits a payload only while `probe` says there is room for it (see
    /// [`SpaceProbe`]); a refused one fails with [`StoreError::AllocFailed`], counters untouched.
    pub fn with_space_probe(probe: SpaceProbe) -> Self {
        Registry {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    next_id: 1,
                    entries: BTreeMap::new(),
                    labels: FastMap::default(),
                    owners: FastMap::default(),
                    in_flight: FastMap::default(),
                    dedup: HashMap::new(),
                    counters: Stats::default(),
                }),
                released: Mutex::new(Vec::new()),
                pending: AtomicBool::new(false),
                space: Space::new(probe),
            }),
        }
    }

    /// Copies `bytes` into a new native allocation. An owner the registry does not know is
    /// recorded as alive (see [`Registry::put_watched`] for monitored owners).
    pub fn put(&self, bytes: &[u8], label: Label, owner: O) -> Result<Arc<Blob<O>>, StoreError> {
        self.insert(bytes.len() as u64, label, owner, None, || {
            buffer::try_copy(bytes)
        })
    }

    /// As [`Registry::put`] for an owner that must be alive and monitored: an owner seen for the
    /// first time is recorded and handed to `watch` (which starts a monitor and says whether the
    /// process was alive), once per owner; a dead one fails with [`StoreError::DeadOwner`].
    pub fn put_watched(
        &self,
        bytes: &[u8],
        label: Label,
        owner: O,
        watch: &mut dyn FnMut(&O) -> bool,
    ) -> Result<Arc<Blob<O>>, StoreError> {
        self.insert(bytes.len() as u64, label, owner, Some(watch), || {
            buffer::try_copy(bytes)
        })
    }

    /// A new native allocation of `size` bytes, each set to `fill`.
    pub fn alloc(
        &self,
        size: u64,
        fill: u8,
        label: Label,
        owner: O,
    ) -> Result<Arc<Blob<O>>, StoreError> {
        self.alloc_until(size, fill, label, owner, || true)
    }

    /// As [`Registry::alloc`], asking `keep_going` between chunks of a long fill (see
    /// [`buffer::try_filled_until`]); `Err(Cancelled)` when it said stop, with nothing counted.
    pub fn alloc_until(
        &self,
        size: u64,
        fill: u8,
        label: Label,
        owner: O,
        keep_going: impl FnMut() -> bool,
    ) -> Result<Arc<Blob<O>>, StoreError> {
        self.alloc_inner(size, fill, label, owner, None, keep_going)
    }

    /// As [`Registry::alloc_until`] for a monitored owner (see [`Registry::put_watched`]).
    pub fn alloc_watched(
        &self,
        size: u64,
        fill: u8,
        label: Label,
        owner: O,
        watch: &mut dyn FnMut(&O) -> bool,
        keep_going: impl FnMut() -> bool,
    ) -> Result<Arc<Blob<O>>, StoreError> {
        self.alloc_inner(size, fill, label, owner, Some(watch), keep_going)
    }

    fn alloc_inner(
        &self,
        size: u64,
        fill: u8,
        label: Label,
        owner: O,
        watch: Option<&mut dyn FnMut(&O) -> bool>,
        keep_going: impl FnMut() -> bool,
    ) -> Result<Arc<Blob<O>>, StoreError> {
        let mut stopped = false;
        let made = self.insert(size, label, owner, watch, || {
            let n = usize::try_from(size).ok()?;
            match buffer::try_filled_until(n, fill, keep_going) {
                Ok(data) => Some(data),
                Err(e) => {
                    stopped = e == buffer::FillError::Stopped;
                    None
                }
            }
        });
        match made {
            Err(StoreError::AllocFailed) if stopped => Err(StoreError::Cancelled),
            other => other,
        }
    }

    /// As [`Registry::intern`] for a monitored owner (see [`Registry::put_watched`]).
    pub fn intern_watched(
        &self,
        bytes: &[u8],
        label: Label,
        owner: O,
        watch: &mut dyn FnMut(&O) -> bool,
    ) -> Result<Interned<O>, StoreError> {
        check_request(bytes.len() as u64, &label)?;
        self.watch(&owner, watch)?;
        self.intern(bytes, label, owner)
    }

    /// Makes sure `owner` is tracked and monitored (see [`Registry::put_watched`]).
    fn watch(&self, owner: &O, watch: &mut dyn FnMut(&O) -> bool) -> Result<(), StoreError> {
        match self.watch_owner(owner) {
            OwnerState::Alive => Ok(()),
            OwnerState::Dead => Err(StoreError::DeadOwner),
            OwnerState::New if watch(owner) => Ok(()),
            OwnerState::New => {
                self.owner_down(owner);
                Err(StoreError::DeadOwner)
            }
        }
    }

    /// Content-addressed storage: identical content shares one allocation while any holder lives.
    /// A hit allocates nothing and is allowed even at capacity. Label and owner of a hit stay those
    /// of the first holder.
    pub fn intern(&self, bytes: &[u8], label: Label, owner: O) -> Result<Interned<O>, StoreError> {
        let size = bytes.len() as u64;
        check_request(size, &label)?;
        let key = xxh3_128(bytes);

        if let Some(blob) = self.find_interned(key, bytes) {
            self.shared.lock().count_hit(size);
            return Ok(Interned { blob, hit: true });
        }

        self.shared.admit(size)?;
        self.shared.lock().reserve(size, &label, &owner)?;
        let Some(data) = buffer::try_copy(bytes) else {
            self.shared.space.refused();
            self.shared.lock().unreserve(size, &label, &owner);
            return Err(StoreError::AllocFailed);
        };

        // Another caller may have interned the same content since the lookup above.
        let mut upgraded = Vec::new();
        let mut state = self.shared.lock();
        if let Some(existing) = state.matching_interned(key, bytes, &mut upgraded) {
            state.unreserve(size, &label, &owner);
            state.count_hit(size);
            drop(state);
            drop(upgraded);
            return Ok(Interned {
                blob: existing,
                hit: true,
            });
        }
        let blob = state.commit(&self.shared, data, label, owner, Some(key), true);
        drop(state);
        drop(upgraded);
        Ok(Interned { blob, hit: false })
    }

    /// Which of `ids` are still live entries, in order (one lock for all). The leak finder asks
    /// this after forcing collections: an entry that is gone was freed, exactly.
    pub fn contains_ids(&self, ids: &[u64]) -> Vec<bool> {
        let state = self.shared.lock();
        ids.iter()
            .map(|id| state.entries.contains_key(id))
            .collect()
    }

    /// Store-wide counters, consistent with each other.
    pub fn stats(&self) -> Stats {
        let state = self.shared.lock();
        let mut s = state.counters;
        s.label_count = state.labels.len() as u64;
        s.owner_count = state.owners.values().filter(|o| o.count > 0).count() as u64;
        s
    }

    /// Every label with live entries (or allocations in flight), largest live bytes first. A
    /// label is forgotten when its last entry is released: its `peak_bytes` is the high-water
    /// mark since it last had nothing live, and a reused label starts again from zero.
    pub fn by_label(&self) -> Vec<(Label, LabelStats)> {
        let state = self.shared.lock();
        let mut v: Vec<_> = state
            .labels
            .iter()
            .map(|(l, s)| (l.clone(), s.stats))
            .collect();
        drop(state);
        v.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// Owners that hold at least one live allocation, largest first.
    pub fn by_owner(&self) -> Vec<(O, OwnerStats)> {
        let state = self.shared.lock();
        // Sized up front so nothing reallocates (copies) while the lock is held.
        let mut v: Vec<(O, OwnerStats)> = Vec::with_capacity(state.owners.len());
        v.extend(
            state
                .owners
                .iter()
                .filter(|(_, s)| s.count > 0)
                .map(|(o, s)| (o.clone(), *s)),
        );
        drop(state);
        v.sort_by_key(|(_, s)| std::cmp::Reverse(s.bytes));
        v
    }

    /// Live allocations matching `filter`, oldest first.
    ///
    /// Walks the entries in chunks of [`LIVE_CHUNK`], releasing the lock between chunks, so a
    /// store with millions of entries never holds up other callers for long; stops as soon as
    /// `limit` entries matched. Entries created or released during the walk may or may not be
    /// listed (each listed entry was live when its chunk was read).
    pub fn live(&self, filter: &LiveFilter<O>) -> Vec<LiveEntry<O>> {
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut out: Vec<LiveEntry<O>> = Vec::new();
        let mut next_id = 0u64;
        // Filled under the lock with no reallocation (sized beforehand); appended to `out`, which
        // may grow by megabytes, only after the lock is released.
        let mut chunk: Vec<LiveEntry<O>> = Vec::with_capacity(LIVE_CHUNK);
        while out.len() < limit {
            let wanted = limit - out.len();
            let now = clock::now();
            let state = self.shared.lock();
            let mut last = None;
            for (id, e) in state.entries.range(next_id..).take(LIVE_CHUNK) {
                last = Some(*id);
                if chunk.len() >= wanted || !filter_matches(filter, e, now) {
                    continue;
                }
                chunk.push(LiveEntry {
                    id: *id,
                    size: e.size,
                    label: e.label.clone(),
                    owner: e.owner.clone(),
                    owner_alive: state.owners.get(&e.owner).is_some_and(|o| o.alive),
                    interned: e.dedup_key.is_some(),
                    age: e.created.until(now),
                });
            }
            // Hand the lock straight to a waiter, if any, before taking the next chunk.
            MutexGuard::unlock_fair(state);
            out.append(&mut chunk);
            match last {
                Some(id) => next_id = id + 1,
                None => break,
            }
        }
        out
    }

    /// Sets (`Some`) or removes (`None`) the hard capacity. Lowering it below the live bytes frees
    /// nothing; new allocations fail until enough is released.
    pub fn set_capacity(&self, capacity: Option<u64>) {
        self.shared.lock().counters.capacity = capacity;
    }

    /// Sets the memory limit: requests that would take live plus in-flight bytes over it are
    /// refused with `Capacity` whatever the capacity (so `alloc(1 TiB)` cannot succeed on a
    /// machine that could never back it). The NIF sets it once, at load, from [`memory_limit`].
    ///
    /// [`memory_limit`]: super::memory_limit
    pub fn set_memory_limit(&self, limit: Option<u64>) {
        self.shared.lock().counters.memory_limit = limit;
    }

    /// Starts tracking `owner` as alive unless it is already known. See [`OwnerState`].
    pub fn watch_owner(&self, owner: &O) -> OwnerState {
        let mut state = self.shared.lock();
        match state.owners.get(owner) {
            Some(o) if o.alive => OwnerState::Alive,
            Some(_) => OwnerState::Dead,
            None => {
                state.owners.insert(owner.clone(), OwnerStats::default());
                OwnerState::New
            }
        }
    }

    /// Records that `owner` exited. Its binaries stay live (other processes may hold them) and are
    /// reported with `owner_alive == false`; the owner's record goes once they are all released.
    /// Calling it twice is harmless.
    pub fn owner_down(&self, owner: &O) {
        let mut state = self.shared.lock();
        let in_flight = state.in_flight.contains_key(owner);
        if let Some(o) = state.owners.get_mut(owner) {
            o.alive = false;
            if o.count == 0 && !in_flight {
                state.owners.remove(owner);
            }
        }
    }

    /// Records a new entry whose payload `make` allocates.
    ///
    /// Up to [`COPY_FIRST_MAX`] bytes the payload is made first, outside the lock, and one lock
    /// then checks the owner, the capacity and the label and commits: a small put takes the
    /// registry lock once, with no reservation (a refused one frees the buffer it made). Larger
    /// payloads are reserved first (so a refused request never allocates, and the capacity is
    /// exact while the copy runs outside the lock), then made, then committed.
    fn insert(
        &self,
        size: u64,
        label: Label,
        owner: O,
        mut watch: Option<&mut dyn FnMut(&O) -> bool>,
        make: impl FnOnce() -> Option<buffer::Payload>,
    ) -> Result<Arc<Blob<O>>, StoreError> {
        check_request(size, &label)?;
        if size <= COPY_FIRST_MAX {
            self.shared.admit(size)?;
            let Some(data) = make() else {
                self.shared.space.refused();
                return Err(StoreError::AllocFailed);
            };
            let mut watched = false;
            loop {
                let mut state = self.shared.lock();
                if let Some(w) = watch.as_mut() {
                    match state.owners.get(&owner).map(|o| o.alive) {
                        Some(true) => {}
                        Some(false) => return Err(StoreError::DeadOwner),
                        // Monitored just now, and already gone with its record: it died.
                        None if watched => return Err(StoreError::DeadOwner),
                        None => {
                            drop(state);
                            self.watch(&owner, *w)?;
                            watched = true;
                            continue;
                        }
                    }
                }
                state.admissible(size, &label)?;
                return Ok(state.commit(&self.shared, data, label, owner, None, false));
            }
        }
        let reservation = self.reserve_entry(size, label, owner, watch)?;
        // The copy or fill runs outside the lock; the reservation keeps the capacity exact.
        let Some(data) = make() else {
            self.shared.space.refused();
            return Err(StoreError::AllocFailed);
        };
        Ok(reservation.commit(data))
    }

    /// Reserves `size` bytes for an entry made outside the lock: the owner is watched (if asked),
    /// the space admitted and the capacity, label and owner checked and counted as in flight.
    fn reserve_entry(
        &self,
        size: u64,
        label: Label,
        owner: O,
        watch: Option<&mut dyn FnMut(&O) -> bool>,
    ) -> Result<Reservation<O>, StoreError> {
        if let Some(w) = watch {
            self.watch(&owner, w)?;
        }
        self.shared.admit(size)?;
        self.shared.lock().reserve(size, &label, &owner)?;
        Ok(Reservation {
            shared: Arc::clone(&self.shared),
            size,
            made_for: Some((label, owner)),
        })
    }

    /// Starts a put of `len` bytes whose copy is made in steps, possibly on several threads (see
    /// [`PendingPut`]), for an owner that must be alive and monitored (as in
    /// [`Registry::put_watched`]). The bytes are reserved and the payload allocated; nothing is
    /// copied yet.
    pub fn begin_put_watched(
        &self,
        len: usize,
        label: Label,
        owner: O,
        watch: &mut dyn FnMut(&O) -> bool,
    ) -> Result<PendingPut<O>, StoreError> {
        let size = len as u64;
        check_request(size, &label)?;
        let reservation = self.reserve_entry(size, label, owner, Some(watch))?;
        let Some(payload) = buffer::try_partial(len) else {
            self.shared.space.refused();
            return Err(StoreError::AllocFailed);
        };
        Ok(PendingPut {
            reservation,
            payload,
        })
    }

    fn find_interned(&self, key: u128, bytes: &[u8]) -> Option<Arc<Blob<O>>> {
        let candidates: Vec<Arc<Blob<O>>> = {
            let state = self.shared.lock();
            match state.dedup.get(&key) {
                None => return None,
                Some(list) => list.iter().filter_map(|(_, w)| w.upgrade()).collect(),
            }
        };
        // Compared (and the losers dropped) outside the lock.
        candidates.into_iter().find(|b| b.bytes() == bytes)
    }
}

thread_local! {
    static LOCK_WAIT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Nanoseconds this thread has waited for any registry's lock since the last call (then 0). The
/// NIF charges a caller's time slice with it instead of timing every call.
pub fn take_lock_wait() -> u64 {
    LOCK_WAIT.with(|w| w.replace(0))
}

/// Largest payload that [`Registry::put`] and [`Registry::alloc`] make before taking the lock
/// (see `insert`): at most this much is allocated, and freed at once, for a request the capacity
/// then refuses.
pub const COPY_FIRST_MAX: u64 = 64 << 10;

/// Entries read per lock acquisition in [`Registry::live`].
pub const LIVE_CHUNK: usize = 512;

fn filter_matches<O: Owner>(filter: &LiveFilter<O>, e: &Entry<O>, now: Stamp) -> bool {
    filter.label.as_ref().is_none_or(|l| *l == e.label)
        && filter.owner.as_ref().is_none_or(|o| *o == e.owner)
        && filter.older_than.is_none_or(|d| e.created.until(now) > d)
}

/// Bytes reserved for an entry made outside the lock. The capacity counts them until the entry
/// is committed; dropped uncommitted (the payload could not be made, or a put was abandoned), the
/// reservation gives them back.
struct Reservation<O: Owner> {
    shared: Arc<Shared<O>>,
    size: u64,
    /// `None` once committed.
    made_for: Option<(Label, O)>,
}

impl<O: Owner> Reservation<O> {
    /// Records the entry, whose payload has the reserved size.
    fn commit(mut self, data: buffer::Payload) -> Arc<Blob<O>> {
        debug_assert_eq!(data.len() as u64, self.size);
        let (label, owner) = self.made_for.take().expect("a reservation commits once");
        let mut state = self.shared.lock();
        state.commit(&self.shared, data, label, owner, None, true)
    }
}

impl<O: Owner> Drop for Reservation<O> {
    fn drop(&mut self) {
        if let Some((label, owner)) = self.made_for.take() {
            self.shared.lock().unreserve(self.size, &label, &owner);
        }
    }
}

/// A put whose copy is made in steps ([`Registry::begin_put_watched`]): its bytes are reserved
/// from the start, so the capacity is exact while it is unfinished, and it becomes an entry only
/// when [`PendingPut::commit`] is given the complete copy. Dropped before that (its caller died,
/// or gave up), it frees its payload and gives its reservation back; nothing is counted.
pub struct PendingPut<O: Owner> {
    reservation: Reservation<O>,
    payload: buffer::PartialPayload,
}

impl<O: Owner> PendingPut<O> {
    /// The payload's length.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// Bytes copied so far.
    pub fn written(&self) -> usize {
        self.payload.written()
    }

    /// Copies more of `src` (the whole source, of the put's length); see
    /// [`buffer::PartialPayload::copy_from`]. True when the copy is complete.
    pub fn copy_from(&mut self, src: &[u8], keep_going: impl FnMut() -> bool) -> bool {
        self.payload.copy_from(src, keep_going)
    }

    /// Sets more of the bytes to `byte` (an `alloc` with a fill, made as a put is); see
    /// [`buffer::PartialPayload::fill_with`]. True when every byte is written.
    pub fn fill_with(&mut self, byte: u8, keep_going: impl FnMut() -> bool) -> bool {
        self.payload.fill_with(byte, keep_going)
    }

    /// The new entry, once the copy is complete; the unfinished put itself otherwise.
    pub fn commit(self) -> Result<Arc<Blob<O>>, Self> {
        let PendingPut {
            reservation,
            payload,
        } = self;
        match payload.finish() {
            Ok(data) => Ok(reservation.commit(data)),
            Err(payload) => Err(PendingPut {
                reservation,
                payload,
            }),
        }
    }
}

impl<O: Owner> std::fmt::Debug for PendingPut<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingPut")
            .field("len", &self.len())
            .field("written", &self.written())
            .finish()
    }
}

fn check_request(size: u64, label: &Label) -> Result<(), StoreError> {
    if size > MAX_BINARY_SIZE {
        return Err(StoreError::TooLarge);
    }
    if label.as_str().len() > MAX_LABEL_BYTES {
        return Err(StoreError::LabelTooLong);
    }
    Ok(())
}

mod state;
#[cfg(test)]
mod tests;
