//! Admission against the memory the process may still map, so that running out of it fails a
//! request with [`StoreError::AllocFailed`](crate::StoreError::AllocFailed) instead of aborting
//! the VM.
//!
//! Making the payload allocation fallible is not enough: when it takes the last bytes an
//! address-space limit (`RLIMIT_AS`) leaves, the next small allocation fails somewhere that cannot
//! fail cleanly (an entry's bookkeeping, which Rust aborts on; the resource or the result term,
//! which the VM allocates and on whose failure it exits). So a payload is admitted only while,
//! after it, a headroom would remain for all of those. What remains is asked of the platform (a
//! [`SpaceProbe`]: the NIF reads the limits, `/proc/self/statm` and jemalloc's reusable bytes),
//! but not on every request: each answer is turned into a budget, half of what remains, that
//! requests draw from without any system call until it is spent. Far from the limit that is one
//! atomic subtraction per request; close to it, the probe runs more and more often.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use parking_lot::Mutex;

/// Bytes a payload may still take (the platform's headroom already deducted), or `None` when
/// nothing limits the process.
pub type SpaceProbe = fn() -> Option<u64>;

/// What each entry's bookkeeping is charged against the budget, on top of its payload.
pub const ENTRY_OVERHEAD: u64 = 512;

/// With no limit in force, requests draw from this budget before the next probe (so a limit set
/// on a running node is seen within 1 GiB of payload).
pub const UNLIMITED_BUDGET: i64 = 1 << 30;

pub struct Space {
    probe: SpaceProbe,
    budget: AtomicI64,
    refresh: Mutex<()>,
}

impl Space {
    /// Starts with an empty budget: the first request asks the probe.
    pub fn new(probe: SpaceProbe) -> Self {
        Space {
            probe,
            budget: AtomicI64::new(0),
            refresh: Mutex::new(()),
        }
    }

    /// Whether a payload of `size` bytes may be allocated now. Counts it against the budget.
    pub fn admit(&self, size: u64) -> bool {
        let cost = size.saturating_add(ENTRY_OVERHEAD).min(i64::MAX as u64 / 2) as i64;
        if self.budget.fetch_sub(cost, Relaxed) >= cost {
            return true;
        }
        // Spent (or this request is larger than what is left of it): ask the platform. Others
        // that spent it meanwhile wait here and ask again; the probe is cheap enough for that.
        let _one_at_a_time = self.refresh.lock();
        match (self.probe)() {
            None => {
                self.budget.store(UNLIMITED_BUDGET - cost, Relaxed);
                true
            }
            Some(avail) => {
                let avail = avail.min(i64::MAX as u64 / 2) as i64;
                if cost <= avail {
                    self.budget.store((avail - cost) / 2, Relaxed);
                    true
                } else {
                    self.budget.store(0, Relaxed);
                    false
                }
            }
        }
    }

    /// An admitted allocation failed anyway: the next request asks the probe again.
    pub fn refused(&self) {
        self.budget.store(0, Relaxed);
    }
}

/// Never limited: for registries outside the NIF (tests, benches).
pub fn unlimited() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    static AVAIL: AtomicU64 = AtomicU64::new(0);
    static PROBES: AtomicU64 = AtomicU64::new(0);

    fn fake() -> Option<u64> {
        PROBES.fetch_add(1, Relaxed);
        match AVAIL.load(Relaxed) {
            u64::MAX => None,
            n => Some(n),
        }
    }

    // One test: the fake probe is a shared static.
    #[test]
    fn budget_halves_towards_the_limit_and_refuses_past_it() {
        AVAIL.store(1 << 20, Relaxed);
        let s = Space::new(fake);
        // 1 MiB left: 4 KiB requests are admitted until what remains is below one request.
        let mut admitted = 0u64;
        while s.admit(4096) {
            admitted += 1;
            AVAIL.fetch_sub(4096 + ENTRY_OVERHEAD, Relaxed);
            assert!(admitted < 1000, "never refused");
        }
        assert_eq!(admitted, (1 << 20) / (4096 + ENTRY_OVERHEAD));
        let probes = PROBES.load(Relaxed);
        assert!(
            probes < admitted / 2,
            "{probes} probes for {admitted} requests"
        );
        // A smaller request still fits; freeing makes room again.
        assert!(s.admit(0));
        AVAIL.store(1 << 20, Relaxed);
        assert!(s.admit(4096));
        // Larger than what is left: refused without taking anything.
        AVAIL.store(1 << 20, Relaxed);
        s.refused();
        assert!(!s.admit(2 << 20));
        assert!(s.admit(512 << 10));
        // No limit: admitted, and the probe is not asked again for the next GiB.
        AVAIL.store(u64::MAX, Relaxed);
        s.refused();
        assert!(s.admit(1 << 20));
        let before = PROBES.load(Relaxed);
        for _ in 0..1000 {
            assert!(s.admit(1 << 10));
        }
        assert_eq!(PROBES.load(Relaxed), before);
    }
}
