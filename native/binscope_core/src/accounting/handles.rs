//! The index from VM-visible resource addresses to store entries.
//!
//! The VM lists a NIF resource binary in `process_info(pid, :binary)` under the address of the
//! resource's own (magic) binary, with a size of about 72 bytes, whatever the data behind it. That
//! address sits at a constant offset from the resource object, which the NIF knows. The NIF records
//! each live store resource here, so a scan can turn a listed address into the real entry and size.
//!
//! Sharded so that puts and releases on different schedulers rarely meet on one lock.

use std::collections::HashMap;

use parking_lot::Mutex;

const SHARDS: usize = 16;

/// Live resource address -> (store entry id, size in bytes).
pub struct HandleIndex {
    shards: [Mutex<HashMap<usize, (u64, u64)>>; SHARDS],
}

impl Default for HandleIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl HandleIndex {
    pub fn new() -> Self {
        HandleIndex {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    fn shard(&self, addr: usize) -> &Mutex<HashMap<usize, (u64, u64)>> {
        // Resource objects are at least 16-byte aligned: drop the always-zero bits first.
        &self.shards[(addr >> 4) % SHARDS]
    }

    /// Records a live resource at `addr` backed by entry `id` of `size` bytes.
    pub fn insert(&self, addr: usize, id: u64, size: u64) {
        self.shard(addr).lock().insert(addr, (id, size));
    }

    /// Forgets the resource at `addr` (its destructor ran).
    pub fn remove(&self, addr: usize) {
        self.shard(addr).lock().remove(&addr);
    }

    /// The entry and size behind `addr`, if it is a live store resource.
    pub fn get(&self, addr: usize) -> Option<(u64, u64)> {
        self.shard(addr).lock().get(&addr).copied()
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
}
