//! Bounding the store payloads that are garbage but not yet released (the rule; the NIFs end
//! the caller's time slice when it says so).
//!
//! The VM does not run a resource's destructor in the garbage collection that drops its last
//! reference: it queues the destructor as aux work of that scheduler, which runs when the
//! scheduler next switches processes (`nif_resource_dtor_prologue` in OTP's `erl_nif.c`). A
//! process that puts in a tight loop is switched out only when its slice ends, so every payload
//! it dropped during the slice stays allocated until then: about 150 of 64 KiB each (9-10 MiB)
//! were measured in flight in a steady put cycle that keeps 8 live, against 16-25 binaries for
//! `:binary.copy/1`, whose buffers the collection frees at once. Each put then copied into memory
//! last touched megabytes earlier, outside the core's cache, and the store's live figures counted
//! the garbage.
//!
//! So a normal-scheduler call that makes store binaries ends its caller's slice once
//! [`BACKLOG_MAX`] bytes were made on this scheduler thread since a store destructor last ran
//! on it. The caller yields, the scheduler runs its queued destructors, and the next puts reuse
//! warm memory. A caller that keeps everything it puts yields once per [`BACKLOG_MAX`] bytes.

use std::cell::Cell;

/// Bytes made on one scheduler thread, with no store destructor run on it since, at which the
/// caller's slice is ended: half of one core's 1 MiB L2 cache on this project's machines, so a
/// window of live binaries plus the garbage still fit in it.
pub const BACKLOG_MAX: usize = 512 << 10;

std::thread_local! {
    /// Bytes made on this thread since a store destructor last ran on it.
    static MADE: Cell<usize> = const { Cell::new(0) };
}

/// Counts a store binary of `bytes` made on this thread.
pub fn made(bytes: usize) {
    MADE.with(|m| m.set(m.get().saturating_add(bytes)));
}

/// A store destructor ran on this thread: the scheduler is running its queued destructors.
pub fn released() {
    MADE.with(|m| m.set(0));
}

/// Whether the caller should end its slice now: this thread's backlog reached [`BACKLOG_MAX`].
/// A true answer starts the count again, so a caller that keeps everything it puts is told once
/// per [`BACKLOG_MAX`] bytes.
pub fn should_yield() -> bool {
    MADE.with(|m| {
        let full = m.get() >= BACKLOG_MAX;
        if full {
            m.set(0);
        }
        full
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_once_per_backlog_and_a_release_starts_again() {
        std::thread::spawn(|| {
            made(BACKLOG_MAX - 1);
            assert!(!should_yield());
            made(1);
            assert!(should_yield());
            assert!(!should_yield(), "the count starts again after a yield");
            made(BACKLOG_MAX - 1);
            released();
            made(1);
            assert!(!should_yield(), "a destructor run empties the backlog");
        })
        .join()
        .unwrap();
    }
}
