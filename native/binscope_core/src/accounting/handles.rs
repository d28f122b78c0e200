//! The index from VM-visible resource addresses to store entries.
//!
//! The VM lists a NIF resource binary in `process_info(pid, :binary)` under the address of the
//! resource's own (magic) binary, with a size of about 72 bytes, whatever the data behind it. That
//! address sits at a constant offset from the resource object, which the NIF knows. The NIF records
//! each live store resource here, so a scan can turn a listed address into the real entry and size.
//!
//! # Addresses are reused: sequence numbers
//!
//! A scan lists processes first and resolves their addresses afterwards. A resource freed in
//! between can have its address taken by a new one, whose entry would then be credited to the
//! process that listed the old one. So every handle gets a creation number from one counter, and
//! a scan reads that counter ([`HandleIndex::mark`]) *before* it starts listing:
//! - a handle created before the mark and still recorded at resolution occupied its address
//!   during the whole listing: a listed binary at that address is that entry, exactly;
//! - a handle created at or after the mark may have replaced an older, freed resource at the
//!   same address that the listing saw: the binary is ambiguous, and reported as unresolved;
//! - no handle at all: if a store resource at that address was released since the mark (per
//!   address bucket, see [`REMOVAL_BUCKETS`]), the listed binary may have been it: unresolved.
//!   Otherwise no store resource was there during the listing: an ordinary VM binary.
//!
//! Sharded so that puts and releases on different schedulers rarely meet on one lock.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

// Addresses are the VM's, not a caller's choice: the registry's cheap hasher is safe for them
// (std's SipHash was a tenth of the index's cost per put).
use crate::store::hash::FastMap;

const SHARDS: usize = 16;
/// A shard is never shrunk below this many slots: small tables are not worth rehashing.
const SHARD_MIN_CAPACITY: usize = 1024;

/// Buckets (by address) of the last release time: a release marks its bucket, so a scan can tell
/// "a store resource at this address may have been released since I started" (never a false
/// "no") from "none was" (rarely a false "maybe", when another address in the bucket was).
pub const REMOVAL_BUCKETS: usize = 4096;

/// A live store resource as the index records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle {
    /// The store entry behind it.
    pub id: u64,
    /// The entry's size in bytes.
    pub size: u64,
    /// Its creation number (see the module docs).
    pub seq: u64,
}

/// What a listed binary turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Store entry `id` of `size` bytes, exactly.
    Store { id: u64, size: u64 },
    /// Possibly a store binary that cannot be identified (its address was reused, or its resource
    /// was released, while the scan ran): neither its entry nor its size is known.
    Unresolved,
    /// Not a store binary: keep what the VM listed.
    NotStore,
}

/// Live resource address -> [`Handle`].
pub struct HandleIndex {
    shards: [Mutex<FastMap<usize, Handle>>; SHARDS],
    /// The next creation (or release) number.
    seq: AtomicU64,
    /// Per bucket of addresses: 1 + the number taken by the latest release there (0: none).
    removed: Box<[AtomicU64]>,
}

impl Default for HandleIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl HandleIndex {
    pub fn new() -> Self {
        HandleIndex {
            shards: std::array::from_fn(|_| Mutex::new(FastMap::default())),
            seq: AtomicU64::new(0),
            removed: (0..REMOVAL_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn shard(&self, addr: usize) -> &Mutex<FastMap<usize, Handle>> {
        // Resource objects are at least 16-byte aligned: drop the always-zero bits first.
        &self.shards[(addr >> 4) % SHARDS]
    }

    fn bucket(&self, addr: usize) -> &AtomicU64 {
        &self.removed[(addr >> 4) % REMOVAL_BUCKETS]
    }

    /// Records a live resource at `addr` backed by entry `id` of `size` bytes. Call it after the
    /// resource exists and before any process can hold its binary.
    pub fn insert(&self, addr: usize, id: u64, size: u64) {
        // The number is taken under the shard lock, like a removal's: a lookup never sees a
        // handle between its number and its insertion.
        let mut shard = self.shard(addr).lock();
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        shard.insert(addr, Handle { id, size, seq });
    }

    /// Forgets the resource at `addr` (its destructor runs; the memory is not yet freed).
    pub fn remove(&self, addr: usize) {
        // Number, bucket mark and removal happen under the shard lock: whoever no longer finds
        // the handle also sees the mark, and whoever still finds it (a listing) finds it before
        // its release took a number, so that number is at or above any mark read before.
        let mut shard = self.shard(addr).lock();
        let now = self.seq.fetch_add(1, Ordering::SeqCst);
        self.bucket(addr).fetch_max(now + 1, Ordering::SeqCst);
        shard.remove(&addr);
        // Hash maps never shrink by themselves: after a burst of a million store binaries the
        // index would keep their tables for good. Shrinking only at 1/4 full, to half, keeps
        // each removal amortised O(1) (and one shrink rehashes a quarter of one shard).
        if shard.capacity() > SHARD_MIN_CAPACITY && shard.len() * 4 < shard.capacity() {
            let keep = (shard.len() * 2).max(SHARD_MIN_CAPACITY);
            shard.shrink_to(keep);
        }
    }

    /// Slots allocated over all shards (what the index holds in memory, beside `len`).
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(|s| s.lock().capacity()).sum()
    }

    /// The mark a scan reads before it lists anything (see the module docs).
    pub fn mark(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// The entry and size behind `addr`, if it is a live store resource.
    pub fn get(&self, addr: usize) -> Option<(u64, u64)> {
        self.handle(addr).map(|h| (h.id, h.size))
    }

    /// The live handle at `addr`, if any.
    pub fn handle(&self, addr: usize) -> Option<Handle> {
        self.shard(addr).lock().get(&addr).copied()
    }

    /// Resolves a binary listed with `listed_size` whose resource object would sit at `addr`, by
    /// a scan that read `mark` before listing. `magic_size` is what the VM lists for a store
    /// binary (the calibration probe's listed size); a listed size equal to the entry's own size
    /// is a match too (a VM that lists a resource binary's payload size).
    pub fn resolve(&self, addr: usize, listed_size: u64, magic_size: u64, mark: u64) -> Resolution {
        self.resolve_with(addr, listed_size, magic_size, mark, false)
    }

    /// As [`HandleIndex::resolve`], where store binaries may also be listed at their own size
    /// (the NIF's GC pressure patch, OTP 27+): an address with no live handle whose resource may
    /// have been released since `mark` is unresolved whatever its listed size, since a released
    /// store binary was listed at its payload's size, not the magic size.
    pub fn resolve_any_size(
        &self,
        addr: usize,
        listed_size: u64,
        magic_size: u64,
        mark: u64,
    ) -> Resolution {
        self.resolve_with(addr, listed_size, magic_size, mark, true)
    }

    fn resolve_with(
        &self,
        addr: usize,
        listed_size: u64,
        magic_size: u64,
        mark: u64,
        any_size: bool,
    ) -> Resolution {
        match self.handle(addr) {
            Some(h) if listed_size == magic_size || listed_size == h.size => {
                if h.seq < mark {
                    Resolution::Store {
                        id: h.id,
                        size: h.size,
                    }
                } else {
                    Resolution::Unresolved
                }
            }
            // Listed at its own size (patched), so the listed size may be an older entry's that
            // lived at this address before this newer handle: ambiguous.
            Some(h) if any_size && h.seq >= mark => Resolution::Unresolved,
            // Neither size a store binary at this address can be listed with.
            Some(_) => Resolution::NotStore,
            None if (any_size || listed_size == magic_size) && self.released_since(addr, mark) => {
                Resolution::Unresolved
            }
            None => Resolution::NotStore,
        }
    }

    /// Whether a resource at an address of `addr`'s bucket may have been released at or after
    /// `mark` was read.
    fn released_since(&self, addr: usize, mark: u64) -> bool {
        // A release that took number n stored n + 1; it came after the mark when n >= mark.
        self.bucket(addr).load(Ordering::SeqCst) > mark
    }

    /// Live resources recorded.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: u64 = 72;

    #[test]
    fn insert_get_remove() {
        let h = HandleIndex::new();
        h.insert(0x7f00_0010, 5, 1 << 20);
        h.insert(0x7f00_0020, 5, 1 << 20);
        assert_eq!(h.get(0x7f00_0010), Some((5, 1 << 20)));
        assert_eq!(h.len(), 2);
        h.remove(0x7f00_0010);
        assert_eq!(h.get(0x7f00_0010), None);
        assert_eq!(h.len(), 1);
        assert_eq!(h.get(0x1234), None);
    }

    #[test]
    fn a_handle_older_than_the_mark_resolves_exactly() {
        let h = HandleIndex::new();
        h.insert(0x1000, 7, 100);
        let mark = h.mark();
        assert_eq!(
            h.resolve(0x1000, MAGIC, MAGIC, mark),
            Resolution::Store { id: 7, size: 100 }
        );
        // A VM that lists the payload's size.
        assert_eq!(
            h.resolve(0x1000, 100, MAGIC, mark),
            Resolution::Store { id: 7, size: 100 }
        );
        assert_eq!(h.resolve(0x1000, 99, MAGIC, mark), Resolution::NotStore);
    }

    /// Regression (issue 12, item 3): a 100-byte entry was listed, released, and its address
    /// taken by a 1 MiB entry before resolution, which credited the 1 MiB to the lister.
    #[test]
    fn an_address_reused_after_the_mark_is_unresolved_never_misattributed() {
        let h = HandleIndex::new();
        h.insert(0x1000, 1, 100);
        let mark = h.mark();
        // Listed here (as a 72-byte magic binary), then released and the address reused.
        h.remove(0x1000);
        h.insert(0x1000, 2, 1 << 20);
        assert_eq!(
            h.resolve(0x1000, MAGIC, MAGIC, mark),
            Resolution::Unresolved
        );
        assert_eq!(
            h.resolve(0x1000, 1 << 20, MAGIC, mark),
            Resolution::Unresolved
        );
        // The next scan sees the new entry exactly.
        let next = h.mark();
        assert_eq!(
            h.resolve(0x1000, MAGIC, MAGIC, next),
            Resolution::Store {
                id: 2,
                size: 1 << 20
            }
        );
    }

    #[test]
    fn a_released_resource_is_unresolved_an_untouched_address_is_not_a_store_binary() {
        let h = HandleIndex::new();
        h.insert(0x2000, 1, 100);
        let mark = h.mark();
        h.remove(0x2000);
        assert_eq!(
            h.resolve(0x2000, MAGIC, MAGIC, mark),
            Resolution::Unresolved
        );
        // Released before the mark: the listing cannot have seen it.
        let later = h.mark();
        assert_eq!(h.resolve(0x2000, MAGIC, MAGIC, later), Resolution::NotStore);
        // Nothing ever lived there: an ordinary binary of the probe's size.
        assert_eq!(h.resolve(0x9990, MAGIC, MAGIC, mark), Resolution::NotStore);
        // Another size was never a store binary's listing.
        assert_eq!(h.resolve(0x2000, 4096, MAGIC, mark), Resolution::NotStore);
    }

    #[test]
    fn concurrent_reuse_never_resolves_to_a_younger_entry() {
        // Threads release and recreate entries at a handful of addresses while a scanner takes a
        // mark, "lists" what is there, and resolves: a Store answer must name the entry it listed.
        let h = std::sync::Arc::new(HandleIndex::new());
        let addrs: Vec<usize> = (1..=8).map(|i| i * 0x100).collect();
        let next_id = std::sync::Arc::new(AtomicU64::new(1));
        for &a in &addrs {
            h.insert(a, next_id.fetch_add(1, Ordering::SeqCst), 100);
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn: Vec<_> = (0..2)
            .map(|t| {
                let (h, addrs, ids, stop) =
                    (h.clone(), addrs.clone(), next_id.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        let a = addrs[i % addrs.len()];
                        // One thread per address parity, so a remove/insert pair is never split.
                        if (a / 0x100) % 2 == t {
                            h.remove(a);
                            h.insert(a, ids.fetch_add(1, Ordering::SeqCst), 100);
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        let rounds = if cfg!(miri) { 50 } else { 20_000 };
        let (mut exact, mut unresolved) = (0, 0);
        for _ in 0..rounds {
            let mark = h.mark();
            let listed: Vec<(usize, Option<u64>)> = addrs
                .iter()
                .map(|&a| (a, h.get(a).map(|(id, _)| id)))
                .collect();
            // Only what the listing saw is resolved (a process lists the binaries it holds).
            for (a, seen) in listed {
                let Some(seen) = seen else { continue };
                match h.resolve(a, MAGIC, MAGIC, mark) {
                    Resolution::Store { id, .. } => {
                        assert_eq!(id, seen, "resolved to an entry the listing did not see");
                        exact += 1;
                    }
                    Resolution::Unresolved => unresolved += 1,
                    Resolution::NotStore => panic!("a listed store binary taken for a VM one"),
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        for c in churn {
            c.join().unwrap();
        }
        assert!(exact + unresolved > 0);
    }

    #[test]
    fn patched_sizes_released_since_the_mark_are_unresolved() {
        const MAGIC: u64 = 56;
        let h = HandleIndex::new();
        let mark = h.mark();
        h.insert(0x4000, 9, 1 << 20);
        h.remove(0x4000);
        // Listed at its payload's size (patched), then released: not a VM binary of 1 MiB.
        assert_eq!(
            h.resolve(0x4000, 1 << 20, MAGIC, mark),
            Resolution::NotStore
        );
        assert_eq!(
            h.resolve_any_size(0x4000, 1 << 20, MAGIC, mark),
            Resolution::Unresolved
        );
        // With no release in its bucket, an address is an ordinary binary either way.
        assert_eq!(
            h.resolve_any_size(0x9990, 1 << 20, MAGIC, h.mark()),
            Resolution::NotStore
        );
    }

    #[test]
    fn patched_size_of_an_older_entry_at_a_reused_address_is_unresolved() {
        const MAGIC: u64 = 56;
        let h = HandleIndex::new();
        // A 100-byte entry was listed at its own size; it was freed and a 1 MiB entry created
        // after the mark took its address before resolution.
        let mark = h.mark();
        h.insert(0x5000, 11, 1 << 20);
        assert_eq!(
            h.resolve_any_size(0x5000, 100, MAGIC, mark),
            Resolution::Unresolved
        );
        // Unpatched, a 100-byte listing cannot be a store binary at all.
        assert_eq!(h.resolve(0x5000, 100, MAGIC, mark), Resolution::NotStore);
        // A handle older than the mark held the address throughout: a size that is not its own
        // is not a store binary.
        let later = h.mark();
        assert_eq!(
            h.resolve_any_size(0x5000, 100, MAGIC, later),
            Resolution::NotStore
        );
    }

    #[test]
    fn the_index_gives_its_tables_back_after_a_burst() {
        let h = HandleIndex::new();
        let addrs: Vec<usize> = (1..=200_000).map(|i| i << 4).collect();
        for (i, &a) in addrs.iter().enumerate() {
            h.insert(a, i as u64, 1);
        }
        let burst = h.capacity();
        assert!(burst >= 200_000);
        for &a in &addrs {
            h.remove(a);
        }
        assert!(h.is_empty());
        // Without shrinking, every slot of the burst stays allocated.
        assert!(
            h.capacity() <= SHARDS * SHARD_MIN_CAPACITY * 2,
            "{} slots kept of {burst}",
            h.capacity()
        );
    }
}
