//! jemalloc's own statistics for the NIF's memory (the VM cannot see any of it).

use rustler::NifMap;
use tikv_jemalloc_ctl::{epoch, stats};

#[derive(NifMap)]
#[rustler(encode)]
pub struct AllocatorStats {
    allocated: u64,
    active: u64,
    resident: u64,
    mapped: u64,
    retained: u64,
    metadata: u64,
    /// Freed bytes held in the threads' caches for reuse: counted in `allocated` (jemalloc's
    /// arenas see them as handed out) though no one uses them. `allocated - tcache_bytes` is
    /// what is in use.
    tcache_bytes: u64,
    /// Freed payload blocks the store keeps for its next payloads (`binscope_core::store::
    /// buffer_pool`): also counted in `allocated`, and also not in use.
    payload_cache_bytes: u64,
}

/// `stats.arenas.<MALLCTL_ARENAS_ALL>.tcache_bytes`: the thread caches of every arena.
const TCACHE_BYTES: &[u8] = b"stats.arenas.4096.tcache_bytes\0";

/// Reads jemalloc's counters after advancing its epoch (they are cached until then).
#[rustler::nif]
fn allocator_stats() -> Result<AllocatorStats, String> {
    let read = || -> Result<AllocatorStats, tikv_jemalloc_ctl::Error> {
        epoch::advance()?;
        Ok(AllocatorStats {
            allocated: stats::allocated::read()? as u64,
            active: stats::active::read()? as u64,
            resident: stats::resident::read()? as u64,
            mapped: stats::mapped::read()? as u64,
            retained: stats::retained::read()? as u64,
            metadata: stats::metadata::read()? as u64,
            // SAFETY: the name is NUL-terminated and the value is a size_t.
            tcache_bytes: unsafe { tikv_jemalloc_ctl::raw::read::<usize>(TCACHE_BYTES)? } as u64,
            payload_cache_bytes: binscope_core::store::buffer_pool::cached_bytes() as u64,
        })
    };
    read().map_err(|e| e.to_string())
}
