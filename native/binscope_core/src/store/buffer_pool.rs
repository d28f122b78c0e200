//! A cache per thread of freed mid-sized payload blocks, reused by the next payload of the same
//! size class on that thread.
//!
//! jemalloc caches freed blocks per thread only up to 32 KiB (its `TCACHE_MAXCLASS_LIMIT` in this
//! build, 5.3: `tcache_max` cannot be raised past it). Above that every allocation and free takes
//! the arena's extent path (extent search, split, merge, statistics) under the arena's lock:
//! about 250 ns a 64 KiB put in a put/drop loop, where the store's whole bookkeeping is about
//! 400 ns. A store payload is freed by the resource destructor the VM runs on the scheduler that
//! collected the last holder, which is usually the scheduler of the process that made it; so a
//! process that puts and drops mid-sized binaries gets its own blocks back here, with no lock.
//!
//! Only the sizes of normal-scheduler puts are cached (up to [`MAX_BLOCK`]; `Binscope.Store`
//! moves 256 KiB and more to dirty schedulers). A larger payload is made on a dirty scheduler's
//! thread and freed on a normal one's, so a cache per thread would never give it back. A shared
//! cache for them was tried twice: at 64 MiB it made no difference in 16 MiB and 1 MiB put/drop
//! loops; at 256 MiB it took a 16 MiB loop from 113k to 104k page faults and from 1.17-1.22 to
//! 1.09-1.16 ms a put, too little for the memory it would hold idle.
//!
//! Bounded twice, so the cache never holds much memory no one uses: [`THREAD_MAX_BYTES`] per
//! thread and [`TOTAL_MAX_BYTES`] over all threads (a node has one thread per scheduler, dirty ones
//! included, and a thread that stops putting keeps what it cached). What is cached is counted
//! ([`cached_bytes`]) and reported beside jemalloc's own thread caches, so it is never memory no
//! figure explains.

use std::alloc::{alloc, dealloc, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Smallest cached block (exclusive): jemalloc's own thread cache serves everything up to it.
pub const MIN_BLOCK: usize = 32 << 10;

/// Largest cached block (inclusive).
pub const MAX_BLOCK: usize = 256 << 10;

/// Bytes one thread may keep cached.
pub const THREAD_MAX_BYTES: usize = 2 << 20;

/// Bytes all threads' caches together may keep.
pub const TOTAL_MAX_BYTES: usize = 32 << 20;

/// Size classes per doubling (as jemalloc's: 40, 48, 56, 64 KiB, then 80, 96, 112, 128 KiB...).
const STEPS: usize = 4;
const LG_MIN: u32 = MIN_BLOCK.trailing_zeros();
const CLASSES: usize = (MAX_BLOCK.trailing_zeros() - LG_MIN) as usize * STEPS;

/// Bytes cached by every thread.
static CACHED: AtomicUsize = AtomicUsize::new(0);

/// Bytes cached now, by all threads (they count in jemalloc's `allocated`).
pub fn cached_bytes() -> usize {
    CACHED.load(Relaxed)
}

/// The block size `size` is rounded up to, and its class index, when it is in the cached range.
fn class_of(size: usize) -> Option<(usize, usize)> {
    if size <= MIN_BLOCK || size > MAX_BLOCK {
        return None;
    }
    // size - 1 so that a power of two is the last class of its doubling, not the first above.
    let lg = usize::BITS - 1 - (size - 1).leading_zeros();
    let step = 1usize << (lg - 2);
    let block = (size - 1) / step * step + step;
    let index = (lg - LG_MIN) as usize * STEPS + block / step - STEPS - 1;
    Some((block, index))
}

/// An allocation: its pointer and the layout it must be freed with.
pub struct Block {
    pub ptr: NonNull<u8>,
    pub layout: Layout,
}

// SAFETY: a block is plain memory owned by whoever holds it.
unsafe impl Send for Block {}

impl Block {
    /// Frees the block with the global allocator.
    fn free(self) {
        // SAFETY: `ptr` was allocated by the global allocator with `layout` (see `fresh`).
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

struct ThreadCache {
    bytes: usize,
    classes: [Vec<Block>; CLASSES],
}

impl Drop for ThreadCache {
    fn drop(&mut self) {
        for class in &mut self.classes {
            for block in class.drain(..) {
                CACHED.fetch_sub(block.layout.size(), Relaxed);
                block.free();
            }
        }
    }
}

thread_local! {
    static THREAD: RefCell<ThreadCache> = const {
        RefCell::new(ThreadCache { bytes: 0, classes: [const { Vec::new() }; CLASSES] })
    };
}

/// A block of at least `size` bytes (`size` > 0), from a cache or the allocator; `None` when the
/// allocator refuses. Its contents are uninitialised (or a previous payload's).
pub fn take(size: usize) -> Option<Block> {
    let Some((block_size, index)) = class_of(size) else {
        return fresh(Layout::from_size_align(size, 1).ok()?);
    };
    take_cached(block_size, index).or_else(|| fresh(Layout::from_size_align(block_size, 1).ok()?))
}

fn take_cached(block_size: usize, index: usize) -> Option<Block> {
    THREAD
        .try_with(|c| {
            let mut c = c.borrow_mut();
            let block = c.classes[index].pop()?;
            c.bytes -= block_size;
            CACHED.fetch_sub(block_size, Relaxed);
            Some(block)
        })
        .ok()
        .flatten()
}

fn fresh(layout: Layout) -> Option<Block> {
    debug_assert!(layout.size() > 0);
    // SAFETY: the layout's size is non-zero (callers ask for the guards at least).
    let ptr = unsafe { alloc(layout) };
    NonNull::new(ptr).map(|ptr| Block { ptr, layout })
}

/// Gives a block back: kept for reuse on this thread if it is of a cached class and both bounds
/// allow it, freed otherwise.
pub fn give(block: Block) {
    let size = block.layout.size();
    let Some((block_size, index)) = class_of(size).filter(|&(b, _)| b == size) else {
        return block.free();
    };
    if let Some(block) = keep(block, block_size, index) {
        block.free();
    }
}

/// Caches the block if the bounds allow it; what could not be kept comes back, to be freed.
fn keep(block: Block, block_size: usize, index: usize) -> Option<Block> {
    let mut block = Some(block);
    let _ = THREAD.try_with(|c| {
        let mut c = c.borrow_mut();
        if c.bytes + block_size > THREAD_MAX_BYTES {
            return;
        }
        // Reserve the bytes in the total first: two threads cannot both take its last room.
        if CACHED.fetch_add(block_size, Relaxed) + block_size > TOTAL_MAX_BYTES {
            CACHED.fetch_sub(block_size, Relaxed);
            return;
        }
        c.bytes += block_size;
        c.classes[index].push(block.take().expect("given once"));
    });
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_like_jemalloc() {
        assert_eq!(class_of(MIN_BLOCK), None);
        assert_eq!(class_of(MIN_BLOCK + 1), Some((40 << 10, 0)));
        assert_eq!(class_of(48 << 10), Some((48 << 10, 1)));
        assert_eq!(class_of(64 << 10), Some((64 << 10, 3)));
        assert_eq!(class_of((64 << 10) + 128), Some((80 << 10, 4)));
        assert_eq!(class_of(MAX_BLOCK), Some((MAX_BLOCK, CLASSES - 1)));
        assert_eq!(class_of(MAX_BLOCK + 1), None);
        // Every size maps to the smallest class that holds it, and classes are distinct.
        let mut last = (0, 0);
        for size in (MIN_BLOCK + 1..=MAX_BLOCK).step_by(997) {
            let (block, index) = class_of(size).unwrap();
            assert!(
                block >= size && block - size < block / 4,
                "{size} -> {block}"
            );
            assert!(index < CLASSES);
            assert!((block, index) >= last);
            assert_eq!(class_of(block), Some((block, index)));
            last = (block, index);
        }
    }

    #[test]
    fn a_freed_block_is_reused_on_its_thread_within_the_bounds() {
        // In a fresh thread: the test harness runs other tests' threads beside this one.
        std::thread::spawn(|| {
            let a = take(64 << 10).unwrap();
            let addr = a.ptr;
            give(a);
            let b = take(60 << 10).unwrap();
            assert_eq!(b.ptr, addr, "the same class comes back from the cache");
            assert_eq!(b.layout.size(), 64 << 10);
            give(b);
            // Outside the cached range: always the allocator.
            let small = take(100).unwrap();
            assert_eq!(small.layout.size(), 100);
            give(small);
            // The thread's bound: it keeps at most THREAD_MAX_BYTES.
            let blocks: Vec<Block> = (0..64).map(|_| take(MAX_BLOCK).unwrap()).collect();
            blocks.into_iter().for_each(give);
            THREAD.with(|c| assert!(c.borrow().bytes <= THREAD_MAX_BYTES));
            assert!(cached_bytes() <= TOTAL_MAX_BYTES);
        })
        .join()
        .unwrap();
    }
}
