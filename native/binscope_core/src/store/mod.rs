//! The registry of native binaries.
//!
//! A [`Registry`] hands out [`Blob`]s: immutable native buffers whose last reference, when dropped,
//! removes the entry from every counter. The NIF wraps each `Arc<Blob>` in a VM resource, so the VM's
//! garbage collector decides when that happens and the counters stay exact.
//!
//! What is counted: every live native allocation once (`live_count`, `live_bytes`), per label and
//! per owner, with high-water marks. Interned (deduplicated) content is one allocation however many
//! holders it has; each extra holder is a `dedup_hit` and `dedup_saved_bytes`.

mod blob;
pub mod buffer;
pub mod buffer_pool;
pub mod clock;
pub(crate) mod hash;
mod label;
mod registry;
pub mod release_backlog;
pub mod space;
mod stats;
pub mod stream;

pub use blob::Blob;
pub use label::{Label, LabelKind};
pub use registry::{take_lock_wait, Interned, OwnerState, PendingPut, Registry, COPY_FIRST_MAX};
pub use stats::{LabelStats, LiveEntry, LiveFilter, OwnerStats, Stats};

use std::hash::Hash;

/// Largest binary the store accepts (1 TiB). Anything above is a caller error, not an allocation
/// attempt: no machine this runs on has that much memory.
pub const MAX_BINARY_SIZE: u64 = 1 << 40;

/// Longest label in bytes (the VM's own limit for an atom's text is 255 characters).
pub const MAX_LABEL_BYTES: usize = 255;

/// Most distinct labels with live entries at once (the default label is always allowed on top);
/// protects the node from unbounded label churn. Labels whose last entry is gone are reclaimed,
/// so only live labels count.
///
/// Under Miri (about 1000x slower) it is 1,024, so the test that fills the table still runs there.
pub const MAX_LABELS: usize = if cfg!(miri) { 1_024 } else { 65_536 };

/// What identifies the process that owns a binary. The NIF uses a local pid; tests use integers.
pub trait Owner: Clone + Eq + Hash + Send + Sync + 'static {}
impl<T: Clone + Eq + Hash + Send + Sync + 'static> Owner for T {}

/// What this machine can back, in bytes: `MemTotal` of `/proc/meminfo` (given as `meminfo`),
/// lowered by the cgroup's limit (`cgroup_limit`: the text of cgroup v2 `memory.max`, `"max"`
/// for none, or of v1 `memory.limit_in_bytes`, whose "no limit" is a huge number). `None` when
/// neither says anything usable. The NIF reads the files once, at load.
pub fn memory_limit(meminfo: Option<&str>, cgroup_limit: Option<&str>) -> Option<u64> {
    let total = meminfo.and_then(|m| {
        m.lines().find_map(|l| {
            let rest = l.strip_prefix("MemTotal:")?.trim();
            let kb: u64 = rest.strip_suffix("kB")?.trim().parse().ok()?;
            kb.checked_mul(1024)
        })
    });
    let cgroup = cgroup_limit
        .and_then(|c| c.trim().parse::<u64>().ok())
        .filter(|&c| c > 0);
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

#[cfg(test)]
mod tests {
    use super::memory_limit;

    #[test]
    fn memory_limit_reads_meminfo_and_cgroups() {
        let meminfo = "MemTotal:       24684092 kB\nMemFree:  100 kB\n";
        assert_eq!(memory_limit(Some(meminfo), None), Some(24_684_092 * 1024));
        assert_eq!(
            memory_limit(Some(meminfo), Some("max\n")),
            Some(24_684_092 * 1024)
        );
        assert_eq!(
            memory_limit(Some(meminfo), Some("4294967296\n")),
            Some(1 << 32)
        );
        // cgroup v1's "no limit".
        assert_eq!(
            memory_limit(Some(meminfo), Some("9223372036854771712")),
            Some(24_684_092 * 1024)
        );
        assert_eq!(memory_limit(None, Some("1048576")), Some(1 << 20));
        assert_eq!(memory_limit(Some("garbage"), Some("0")), None);
        assert_eq!(memory_limit(None, None), None);
    }
}
