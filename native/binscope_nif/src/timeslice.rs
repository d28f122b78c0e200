//! Charging normal-scheduler NIFs for the time they really took.
//!
//! The VM sizes a process's time slice in reductions and counts a NIF call as one. A store call
//! that waits a few microseconds for the registry lock (while a dirty `live/1` walk or a burst of
//! releases holds it) is still short, but hundreds of them in one slice stretched slices past
//! 1 ms in the scheduler test. Reporting the time with `enif_consume_timeslice` lets the VM end
//! the slice on time, so the caller yields instead of holding its scheduler.

use std::time::Instant;

use rustler::Env;

/// What is charged as a full slice (100%), so 1% is 5 µs. Half the 1 ms that `long_schedule`
/// reports: a slice is charged NIF calls plus the caller's own code between them, so a process
/// doing nothing but store calls of ~130 µs each (256 KiB copies into fresh pages) yielded
/// after ~1 ms of them when 1 ms was a full slice, right at the monitor's threshold (seen as
/// 2 ms reports in the under-threshold scheduler test on a loaded machine).
pub const FULL_SLICE_NS: u64 = 500_000;

/// One percent of [`FULL_SLICE_NS`].
const PERCENT_NS: u64 = FULL_SLICE_NS / 100;

/// Runs `f` and charges the calling process `elapsed / FULL_SLICE_NS` of a time slice (at least
/// 1%). For normal-scheduler NIFs only.
pub fn charged<T>(env: Env, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let result = f();
    let nanos = start.elapsed().as_nanos() as u64;
    // Anything under 1% is within the one reduction a NIF costs.
    if nanos >= PERCENT_NS {
        let percent = (nanos / PERCENT_NS).min(100) as i32;
        rustler::schedule::consume_timeslice(env, percent);
    }
    result
}

/// Up to this many bytes of work, [`charged_estimate`] charges an estimate instead of timing.
pub const ESTIMATE_MAX: usize = 16 << 10;

/// What a small store call is charged besides its bytes: measured at 0.6-0.9 µs per put in the
/// steady cycle (NIF call, bookkeeping, resource), rounded up.
const CALL_NS: u64 = 1_000;

std::thread_local! {
    /// Charged nanoseconds not yet worth 1% of a slice, carried to this thread's next call.
    static CREDIT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// As [`charged`] for a call whose work is `bytes` of copy or fill: up to [`ESTIMATE_MAX`] it reads
/// no clock (two clock reads were a tenth of a small put) and charges [`CALL_NS`] plus the bytes at
/// 2 GiB/s (the slowest rate measured, into fresh pages) plus any measured wait for the registry
/// lock (`binscope_core::store::take_lock_wait`); the part under 1% carries over to the next call,
/// so a loop of small puts is charged what it costs in total.
pub fn charged_estimate<T>(env: Env, bytes: usize, f: impl FnOnce() -> T) -> T {
    if bytes > ESTIMATE_MAX {
        return charged(env, f);
    }
    binscope_core::store::take_lock_wait();
    let result = f();
    let ns = CALL_NS + bytes as u64 / 2 + binscope_core::store::take_lock_wait();
    CREDIT.with(|c| {
        let total = c.get() + ns;
        c.set(total % PERCENT_NS);
        let percent = total / PERCENT_NS;
        if percent > 0 {
            rustler::schedule::consume_timeslice(env, percent.min(100) as i32);
        }
    });
    result
}
