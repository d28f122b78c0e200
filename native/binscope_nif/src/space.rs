//! The store's memory probe (`binscope_core::store::space`): how many bytes a payload may still
//! take before the process runs short of the memory it may map.
//!
//! Only limits the kernel enforces by refusing a mapping are seen: `RLIMIT_AS` (address space)
//! and `RLIMIT_DATA` (private writable mappings). With neither set the store is not limited here
//! (a cgroup limit is enforced by the OOM killer, which no allocator can answer).
//!
//! Left alone for the VM and the bookkeeping: [`headroom`] of the limit. Within a quarter of the
//! limit, jemalloc is first asked to give its unused pages back, so memory freed a moment ago
//! does not count as used.

/// Kept free under a limit: 1/16 of it, at least 64 MiB. It has to hold everything that is not a
/// payload and may need new mappings until the store refuses: resources and result terms (the VM
/// allocates them and exits when it cannot), the store's tables (Rust aborts when they cannot
/// grow), and the garbage collections of the processes that hold the binaries.
pub fn headroom(limit: u64) -> u64 {
    (limit / 16).max(64 << 20)
}

/// Bytes a payload may take now, or `None` when no limit is set.
pub fn available() -> Option<u64> {
    let as_limit = limit(libc::RLIMIT_AS);
    let data_limit = limit(libc::RLIMIT_DATA);
    if as_limit.is_none() && data_limit.is_none() {
        return None;
    }
    let room = || {
        // Unreadable /proc: nothing to compare the limits with; the payload allocation still
        // fails cleanly, only the headroom is not guaranteed.
        let (size, data) = statm()?;
        let left = |limit: Option<u64>, used: u64| {
            limit.map(|l| l.saturating_sub(used).saturating_sub(headroom(l)))
        };
        match (left(as_limit, size), left(data_limit, data)) {
            (Some(a), Some(d)) => Some(a.min(d)),
            (a, d) => a.or(d),
        }
    };
    let now = room()?;
    let limit = as_limit
        .into_iter()
        .chain(data_limit)
        .min()
        .unwrap_or(u64::MAX);
    // Close to the limit, freed pages jemalloc still holds (dirty, for up to 10 s) count against
    // it: give them back now and look again. (Counting them as available instead was wrong: a
    // 16 MiB allocation leaves a 2-4 MiB dirty remainder that only smaller requests can use.)
    if now < limit / 4 && purge() {
        return room();
    }
    Some(now)
}

fn limit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(r.rlim_cur)
}

/// (VmSize, VmData + stack) in bytes, from `/proc/self/statm` (fields 1 and 6, in pages).
fn statm() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = u64::try_from(page).ok().filter(|p| *p > 0)?;
    Some((fields.first()? * page, fields.get(5)? * page))
}

/// Makes jemalloc return its unused (dirty and muzzy) pages now; with `retain:false` that unmaps
/// them. True when it ran.
fn purge() -> bool {
    if cfg!(feature = "system_alloc") {
        return false;
    }
    // SAFETY: "arena.<MALLCTL_ARENAS_ALL>.purge" takes no argument and returns nothing, which is
    // what the null pointers and zero length say.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        ) == 0
    }
}
