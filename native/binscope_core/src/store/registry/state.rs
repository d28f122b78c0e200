//! The registry's bookkeeping under its lock: releases queued by `Blob` drops, and what each
//! entry adds to and removes from the counters and indexes.

use super::*;

impl<O: Owner> Shared<O> {
    /// Refuses a payload the process has no room for, before anything is counted.
    pub(super) fn admit(&self, size: u64) -> Result<(), StoreError> {
        if self.space.admit(size) {
            Ok(())
        } else {
            Err(StoreError::AllocFailed)
        }
    }

    /// The registry lock, with every queued release applied. A wait for it is timed and added
    /// to this thread's [`take_lock_wait`] (an uncontended lock reads no clock).
    pub(super) fn lock(&self) -> MutexGuard<'_, State<O>> {
        // parking_lot locks are never poisoned: a panic elsewhere cannot wedge the store.
        let mut state = match self.state.try_lock() {
            Some(state) => state,
            None => {
                let start = std::time::Instant::now();
                let state = self.state.lock();
                let waited = start.elapsed().as_nanos() as u64;
                LOCK_WAIT.with(|w| w.set(w.get().saturating_add(waited)));
                state
            }
        };
        self.apply_released(&mut state);
        state
    }

    pub(super) fn apply_released(&self, state: &mut State<O>) {
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
    pub(in crate::store) fn release(&self, id: u64) {
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
    pub(super) fn remove_entry(&mut self, id: u64) {
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
    pub(super) fn admissible(&self, size: u64, label: &Label) -> Result<(), StoreError> {
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
    pub(super) fn reserve(
        &mut self,
        size: u64,
        label: &Label,
        owner: &O,
    ) -> Result<(), StoreError> {
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
    pub(super) fn end_in_flight(&mut self, owner: &O) {
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
    pub(super) fn shrink_after_burst(&mut self) {
        const MIN: usize = 1024;
        if self.dedup.capacity() > MIN && self.dedup.len() * 4 < self.dedup.capacity() {
            self.dedup.shrink_to((self.dedup.len() * 2).max(MIN));
        }
    }

    pub(super) fn unreserve(&mut self, size: u64, label: &Label, owner: &O) {
        self.counters.reserved_bytes -= size;
        self.end_label_in_flight(label);
        self.end_in_flight(owner);
    }

    /// Ends a reservation under `label`; reclaims the label if nothing else uses it.
    pub(super) fn end_label_in_flight(&mut self, label: &Label) {
        if let Some(l) = self.labels.get_mut(label) {
            l.in_flight -= 1;
            if l.unused() {
                self.labels.remove(label);
            }
        }
    }

    pub(super) fn count_hit(&mut self, size: u64) {
        self.counters.dedup_hits += 1;
        self.counters.dedup_saved_bytes += size;
    }

    /// A live interned allocation with exactly these bytes. Upgraded references are pushed to
    /// `upgraded` so the caller drops them after unlocking.
    pub(super) fn matching_interned(
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
    pub(super) fn commit(
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
            Box::new(Entry {
                size,
                label,
                owner,
                created: clock::now(),
                dedup_key,
            }),
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
