//! The registry: one mutex over all counters, so every snapshot is consistent and the capacity is
//! exact under concurrency. Copies and hashing happen outside the lock; only bookkeeping is inside.
//!
//! The mutex is parking_lot's: it is eventually fair (a forced hand-off about every 0.5 ms), so
//! a long walk or a burst of releases cannot starve a caller on a normal scheduler, which std's
//! mutex allowed (measured: 47 ms waits while `live/1` walked 300k entries).
//!
//! Releases never wait for the lock: a `Blob` drop (which runs inside the VM's GC) queues its id
//! and applies the queue only if the lock is free; the next lock holder applies it otherwise (see
//! `Shared::released`). Still, code that upgrades weak references under the lock hands the strong
//! ones out and drops them after unlocking, so releases are applied promptly.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};
use xxhash_rust::xxh3::xxh3_128;

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
    /// runs inside the VM's garbage collection, where waiting for the registry lock would stretch
    /// the collecting process's time slice; it queues its id here instead (an O(1) hold of a lock
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
    created: Instant,
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
    /// from any id, so long walks release the lock between chunks.
    entries: BTreeMap<u64, Entry<O>>,
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
            let now = Instant::now();
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
                    age: now.saturating_duration_since(e.created),
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
        if let Some(w) = watch {
            self.watch(&owner, w)?;
        }
        self.shared.admit(size)?;
        self.shared.lock().reserve(size, &label, &owner)?;
        // The copy or fill runs outside the lock; the reservation keeps the capacity exact.
        let Some(data) = make() else {
            self.shared.space.refused();
            self.shared.lock().unreserve(size, &label, &owner);
            return Err(StoreError::AllocFailed);
        };
        let mut state = self.shared.lock();
        Ok(state.commit(&self.shared, data, label, owner, None, true))
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

fn filter_matches<O: Owner>(filter: &LiveFilter<O>, e: &Entry<O>, now: Instant) -> bool {
    filter.label.as_ref().is_none_or(|l| *l == e.label)
        && filter.owner.as_ref().is_none_or(|o| *o == e.owner)
        && filter
            .older_than
            .is_none_or(|d| now.saturating_duration_since(e.created) > d)
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

impl<O: Owner> Shared<O> {
    /// Refuses a payload the process has no room for, before anything is counted.
    fn admit(&self, size: u64) -> Result<(), StoreError> {
        if self.space.admit(size) {
            Ok(())
        } else {
            Err(StoreError::AllocFailed)
        }
    }

    /// The registry lock, with every queued release applied. A wait for it is timed and added
    /// to this thread's [`take_lock_wait`] (an uncontended lock reads no clock).
    fn lock(&self) -> MutexGuard<'_, State<O>> {
        // parking_lot locks are never poisoned: a panic elsewhere cannot wedge the store.
        let mut state = match self.state.try_lock() {
            Some(state) => state,
            None => {
                let start = Instant::now();
                let state = self.state.lock();
                let waited = start.elapsed().as_nanos() as u64;
                LOCK_WAIT.with(|w| w.set(w.get().saturating_add(waited)));
                state
            }
        };
        self.apply_released(&mut state);
        state
    }

    fn apply_released(&self, state: &mut State<O>) {
        if !self.pending.load(SeqCst) {
            return;
        }
        let ids = {
            let mut queue = self.released.lock();
            self.pending.store(false, SeqCst);
            std::mem::take(&mut *queue)
        };
        for id in ids {
            state.remove_entry(id);
        }
    }

    /// Called from `Blob::drop`: the last holder is gone. Never waits for the registry lock:
    /// removes the entry at once when the lock is free, queues it otherwise.
    pub(super) fn release(&self, id: u64) {
        if let Some(mut state) = self.state.try_lock() {
            self.apply_released(&mut state);
            state.remove_entry(id);
            return;
        }
        {
            let mut queue = self.released.lock();
            queue.push(id);
            self.pending.store(true, SeqCst);
        }
        // The holder may have unlocked before the push: apply it now if nobody holds the lock.
        if let Some(mut state) = self.state.try_lock() {
            self.apply_released(&mut state);
        }
    }
}

impl<O: Owner> State<O> {
    /// Removes a released entry from every counter and index.
    fn remove_entry(&mut self, id: u64) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        let c = &mut self.counters;
        c.live_count -= 1;
        c.live_bytes -= entry.size;
        c.frees += 1;
        if let Some(l) = self.labels.get_mut(&entry.label) {
            l.stats.count -= 1;
            l.stats.bytes -= entry.size;
            if l.unused() {
                self.labels.remove(&entry.label);
            }
        }
        if let Some(o) = self.owners.get_mut(&entry.owner) {
            o.count -= 1;
            o.bytes -= entry.size;
            if !o.alive && o.count == 0 {
                self.owners.remove(&entry.owner);
            }
        }
        if let Some(key) = entry.dedup_key {
            if let Some(list) = self.dedup.get_mut(&key) {
                list.retain(|(i, _)| *i != id);
                if list.is_empty() {
                    self.dedup.remove(&key);
                }
            }
        }
        self.shrink_after_burst();
    }

    /// Whether `size` more bytes fit under the capacity and the memory limit, and `label` can be
    /// tracked, right now (nothing is counted).
    fn admissible(&self, size: u64, label: &Label) -> Result<(), StoreError> {
        let c = &self.counters;
        let wanted = c
            .live_bytes
            .saturating_add(c.reserved_bytes)
            .saturating_add(size);
        let over = |limit: Option<u64>| limit.is_some_and(|l| wanted > l);
        if over(c.capacity) || over(c.memory_limit) {
            return Err(StoreError::Capacity);
        }
        // The default label is never refused: at most MAX_LABELS others plus it.
        if self.labels.len() >= MAX_LABELS
            && !label.is_default()
            && !self.labels.contains_key(label)
        {
            return Err(StoreError::LabelLimit);
        }
        Ok(())
    }

    /// Counts `size` against the capacity before any memory is touched, and makes sure the label
    /// can be tracked.
    fn reserve(&mut self, size: u64, label: &Label, owner: &O) -> Result<(), StoreError> {
        self.admissible(size, label)?;
        match self.labels.get_mut(label) {
            Some(l) => l.in_flight += 1,
            None => {
                let slot = LabelSlot {
                    stats: LabelStats::default(),
                    in_flight: 1,
                };
                self.labels.insert(label.clone(), slot);
            }
        }
        self.counters.reserved_bytes += size;
        *self.in_flight.entry(owner.clone()).or_insert(0) += 1;
        Ok(())
    }

    /// Ends `owner`'s reservation (committed or given back). Drops a dead owner's record if this
    /// was the last thing keeping it.
    fn end_in_flight(&mut self, owner: &O) {
        if let Some(n) = self.in_flight.get_mut(owner) {
            *n -= 1;
            if *n > 0 {
                return;
            }
            self.in_flight.remove(owner);
        }
        if self
            .owners
            .get(owner)
            .is_some_and(|o| !o.alive && o.count == 0)
        {
            self.owners.remove(owner);
        }
    }

    /// Gives memory back after a burst: hash maps never shrink by themselves, and a node that once
    /// held a million interned entries should not keep their table forever (the entry table is a
    /// B-tree, which frees its nodes as it empties). Amortised O(1): it only shrinks
    /// when a map is at most 1/4 full, to half its capacity.
    fn shrink_after_burst(&mut self) {
        const MIN: usize = 1024;
        if self.dedup.capacity() > MIN && self.dedup.len() * 4 < self.dedup.capacity() {
            self.dedup.shrink_to((self.dedup.len() * 2).max(MIN));
        }
    }

    fn unreserve(&mut self, size: u64, label: &Label, owner: &O) {
        self.counters.reserved_bytes -= size;
        self.end_label_in_flight(label);
        self.end_in_flight(owner);
    }

    /// Ends a reservation under `label`; reclaims the label if nothing else uses it.
    fn end_label_in_flight(&mut self, label: &Label) {
        if let Some(l) = self.labels.get_mut(label) {
            l.in_flight -= 1;
            if l.unused() {
                self.labels.remove(label);
            }
        }
    }

    fn count_hit(&mut self, size: u64) {
        self.counters.dedup_hits += 1;
        self.counters.dedup_saved_bytes += size;
    }

    /// A live interned allocation with exactly these bytes. Upgraded references are pushed to
    /// `upgraded` so the caller drops them after unlocking.
    fn matching_interned(
        &self,
        key: u128,
        bytes: &[u8],
        upgraded: &mut Vec<Arc<Blob<O>>>,
    ) -> Option<Arc<Blob<O>>> {
        let list = self.dedup.get(&key)?;
        upgraded.extend(list.iter().filter_map(|(_, w)| w.upgrade()));
        upgraded.iter().find(|b| b.bytes() == bytes).cloned()
    }

    /// Turns a filled buffer into a live entry: one that `reserve` counted (`reserved`), or one
    /// that `admissible` just allowed under the same lock.
    fn commit(
        &mut self,
        shared: &Arc<Shared<O>>,
        data: buffer::Payload,
        label: Label,
        owner: O,
        dedup_key: Option<u128>,
        reserved: bool,
    ) -> Arc<Blob<O>> {
        let size = data.len() as u64;
        let id = self.next_id;
        self.next_id += 1;

        let c = &mut self.counters;
        if reserved {
            c.reserved_bytes -= size;
        }
        c.live_count += 1;
        c.live_bytes += size;
        c.peak_bytes = c.peak_bytes.max(c.live_bytes);
        c.allocs += 1;

        // A reservation created the slot (or found it) and kept it alive until now.
        let l = match self.labels.get_mut(&label) {
            Some(l) => l,
            None => self.labels.entry(label.clone()).or_default(),
        };
        if reserved {
            l.in_flight = l.in_flight.saturating_sub(1);
        }
        let l = &mut l.stats;
        l.count += 1;
        l.bytes += size;
        l.peak_bytes = l.peak_bytes.max(l.bytes);

        let o = match self.owners.get_mut(&owner) {
            Some(o) => o,
            None => self.owners.entry(owner.clone()).or_default(),
        };
        o.count += 1;
        o.bytes += size;
        if reserved {
            self.end_in_flight(&owner);
        }

        self.entries.insert(
            id,
            Entry {
                size,
                label,
                owner,
                created: Instant::now(),
                dedup_key,
            },
        );
        let blob = Arc::new(Blob {
            id,
            data,
            shared: Arc::clone(shared),
        });
        if let Some(key) = dedup_key {
            self.dedup
                .entry(key)
                .or_default()
                .push((id, Arc::downgrade(&blob)));
        }
        blob
    }
}

#[cfg(test)]
mod tests {
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
}
