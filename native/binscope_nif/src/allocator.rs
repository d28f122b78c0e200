//! jemalloc's own statistics for the NIF's memory (the VM cannot see any of it), and the arena
//! of large zeroed payloads.

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

/// Gives large zeroed payloads (`Store.alloc/2` with the default fill, above the payload cache's
/// blocks) a jemalloc arena of their own (`binscope_core::store::buffer::set_zeroed_source`
/// says why). Measured in `Binscope.Bench.Suite.StoreVm`'s ring of 16 MiB binaries, with zeroed
/// allocs in the same arenas: 2,006 page faults and 4.1 ms a put, against 961 and 1.3 ms next to
/// filled allocs. A zeroed payload freed into its own arena is only ever reused by another zeroed
/// one. Once per copy of the library (it is never unloaded); if jemalloc cannot make the arena,
/// zeroed payloads stay in the shared arenas. Sanitizer builds (`system_alloc`) keep
/// `alloc_zeroed`.
pub fn use_zeroed_arena() {
    #[cfg(not(feature = "system_alloc"))]
    {
        static ARENA: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
        // SAFETY: reading `arenas.create` makes an arena and returns its index, an unsigned.
        let arena = *ARENA.get_or_init(|| unsafe {
            tikv_jemalloc_ctl::raw::read::<u32>(b"arenas.create\0")
                .ok()
                .map(|a| a as usize)
        });
        if let Some(arena) = arena {
            ZEROED_ARENA.store(arena, std::sync::atomic::Ordering::Relaxed);
            // SAFETY: `zeroed_in_arena` keeps `ZeroedSource`'s contract (see there).
            unsafe { binscope_core::store::buffer::set_zeroed_source(zeroed_in_arena) };
        }
    }
}

#[cfg(not(feature = "system_alloc"))]
static ZEROED_ARENA: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `layout.size()` zeroed bytes from the zeroed arena, or null. The global allocator (this same
/// jemalloc) frees them with any layout of that size: a free goes to the arena that made the
/// block, whatever the flags. Alignment: the store's payloads are byte arrays, and jemalloc
/// aligns every block to at least 16 bytes (more is asked for with `MALLOCX_ALIGN` if needed).
#[cfg(not(feature = "system_alloc"))]
unsafe fn zeroed_in_arena(layout: std::alloc::Layout) -> *mut u8 {
    use tikv_jemalloc_sys::{
        mallocx, MALLOCX_ALIGN, MALLOCX_ARENA, MALLOCX_TCACHE_NONE, MALLOCX_ZERO,
    };
    let arena = ZEROED_ARENA.load(std::sync::atomic::Ordering::Relaxed);
    let align = if layout.align() > 16 {
        MALLOCX_ALIGN(layout.align())
    } else {
        0
    };
    // SAFETY: the size is non-zero (`try_zeroed` asks for the guards at least).
    unsafe {
        mallocx(
            layout.size(),
            MALLOCX_ARENA(arena) | MALLOCX_ZERO | MALLOCX_TCACHE_NONE | align,
        )
        .cast()
    }
}
