//! The clock entries are stamped with at creation, for their ages.
//!
//! Every put stamps its entry, so the clock is on the hot path: the kernel's coarse monotonic
//! clock (`CLOCK_MONOTONIC_COARSE`) is read in about 3 ns against 20 ns for the precise one
//! (`Instant::now`) on this project's machines, a tenth of a small put's bookkeeping. Its
//! resolution is the kernel's tick (1-4 ms; 4 ms there), which is what an age reported in
//! milliseconds can carry: an age is at most one tick short of the real one.

use std::time::Duration;

/// A point on the coarse monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(Duration);

impl Stamp {
    /// The time from `self` to `later` (zero if `later` is earlier).
    pub fn until(self, later: Stamp) -> Duration {
        later.0.saturating_sub(self.0)
    }
}

/// Now, on the coarse monotonic clock.
#[cfg(all(target_os = "linux", not(miri)))]
pub fn now() -> Stamp {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC_COARSE exists on every Linux
    // since 2.6.32 (a failure leaves zero, which only makes ages read as longer).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Stamp(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Now, elsewhere (and under Miri): the precise clock, from a base taken at first use.
#[cfg(not(all(target_os = "linux", not(miri))))]
pub fn now() -> Stamp {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    Stamp(BASE.get_or_init(std::time::Instant::now).elapsed())
}

/// The clock's resolution: at most this much of an age may be missing.
pub fn resolution() -> Duration {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as in `now`.
        if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } == 0 {
            return Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        }
    }
    Duration::from_nanos(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_follow_the_precise_clock_within_the_resolution() {
        let res = resolution();
        assert!(res <= Duration::from_millis(10), "{res:?}");
        let (a, t) = (now(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(30));
        let (b, elapsed) = (now(), t.elapsed());
        let age = a.until(b);
        assert!(
            age + res >= elapsed.saturating_sub(res),
            "{age:?} vs {elapsed:?}"
        );
        assert!(age <= elapsed + 2 * res, "{age:?} vs {elapsed:?}");
        assert_eq!(b.until(a), Duration::ZERO);
    }
}
