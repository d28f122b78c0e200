//! Snapshots the registry hands out. They are plain values: reading them holds no lock.

use std::time::Duration;

use super::Label;

/// Store-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Native allocations alive now (an interned entry counts once).
    pub live_count: u64,
    /// Bytes of those allocations.
    pub live_bytes: u64,
    /// Highest `live_bytes` ever seen.
    pub peak_bytes: u64,
    /// Allocations made since start.
    pub allocs: u64,
    /// Allocations released since start (`live_count == allocs - frees` always).
    pub frees: u64,
    /// The hard cap on `live_bytes + reserved_bytes`, if any.
    pub capacity: Option<u64>,
    /// What the machine can back (physical memory, or the cgroup's limit when lower), if known:
    /// enforced like `capacity`, whatever `capacity` is.
    pub memory_limit: Option<u64>,
    /// Bytes reserved by allocations in flight (counted against the capacity, not yet live).
    pub reserved_bytes: u64,
    /// Interned requests answered by an existing allocation.
    pub dedup_hits: u64,
    /// Bytes those hits did not allocate.
    pub dedup_saved_bytes: u64,
    /// Distinct labels tracked.
    pub label_count: u64,
    /// Owners with at least one live binary.
    pub owner_count: u64,
}

/// Per-label counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelStats {
    pub count: u64,
    pub bytes: u64,
    pub peak_bytes: u64,
}

/// Per-owner counters. `alive` turns false when the owner process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerStats {
    pub count: u64,
    pub bytes: u64,
    pub alive: bool,
}

impl Default for OwnerStats {
    fn default() -> Self {
        OwnerStats {
            count: 0,
            bytes: 0,
            alive: true,
        }
    }
}

/// Which live entries to list.
#[derive(Debug, Clone)]
pub struct LiveFilter<O> {
    pub label: Option<Label>,
    pub owner: Option<O>,
    pub older_than: Option<Duration>,
    pub limit: Option<usize>,
}

impl<O> Default for LiveFilter<O> {
    fn default() -> Self {
        LiveFilter {
            label: None,
            owner: None,
            older_than: None,
            limit: None,
        }
    }
}

/// One live allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEntry<O> {
    pub id: u64,
    pub size: u64,
    pub label: Label,
    pub owner: O,
    pub owner_alive: bool,
    pub interned: bool,
    pub age: Duration,
}
