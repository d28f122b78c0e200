//! Charging normal-scheduler NIFs for the time they really took.
//!
//! The VM sizes a process's time slice in reductions and counts a NIF call as one. A store call
//! that waits a few microseconds for the registry lock (while a dirty `live/1` walk or a burst of
//! releases holds it) is still short, but hundreds of them in one slice stretched slices past
//! 1 ms in the scheduler test. Reporting the time with `enif_consume_timeslice` lets the VM end
//! the slice on time, so the caller yields instead of holding its scheduler.

use std::time::Instant;

use rustler::Env;

/// Runs `f` and charges the calling process `elapsed / 1 ms` of a time slice (at least 1%).
/// For normal-scheduler NIFs only.
pub fn charged<T>(env: Env, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let result = f();
    let micros = start.elapsed().as_micros();
    // 1 ms is a full slice (100%); anything under 10 µs is within the one reduction a NIF costs.
    if micros >= 10 {
        let percent = (micros / 10).min(100) as i32;
        rustler::schedule::consume_timeslice(env, percent);
    }
    result
}
