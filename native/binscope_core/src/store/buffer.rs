//! Fallible allocation of the native buffers: an allocation failure becomes
//! [`StoreError::AllocFailed`](crate::StoreError::AllocFailed) instead of an abort that would take
//! the whole VM down.

use std::alloc::{alloc_zeroed, Layout};
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::OnceLock;

use super::buffer_pool::{self, Block};
use super::stream;

/// Bytes kept readable before and after every payload. The VM reads a binary's bytes with
/// word-sized loads that may reach a few bytes outside the binary (its own binaries have headers
/// and padding around their data); a payload handed out as a resource binary must tolerate the
/// same, even when it starts or ends at a page whose neighbour is unmapped.
///
/// 16 bytes would do for the VM; it is 64 so that a payload starts on a cache line, as the
/// allocation does (the cost: 96 more bytes per payload). This was tried against a 64 KiB put
/// that had got slower in the steady-cycle bench; interleaved runs of 16 against 64 did not tell
/// them apart on the loaded machine (3.4-4.2 µs against 4.0-4.4 µs), so no speed is claimed.
pub const GUARD: usize = 64;

/// A native payload: `GUARD` zero bytes, the payload, `GUARD` zero bytes, in one block (which may
/// be larger: mid-sized blocks come in the size classes of `buffer_pool`). Derefs to the payload.
/// Dropping it gives the block back to `buffer_pool`.
pub struct Payload {
    /// `None` only while the block is given back.
    block: Option<Block>,
    len: usize,
}

// SAFETY: the bytes are written once, before the payload exists, and only read after.
unsafe impl Send for Payload {}
unsafe impl Sync for Payload {}

impl Payload {
    fn ptr(&self) -> NonNull<u8> {
        self.block
            .as_ref()
            .expect("a live payload has its block")
            .ptr
    }

    /// The leading guard's first byte: `len() + 2 * GUARD` bytes from it are readable. (A
    /// pointer taken from the payload slice may only read the payload itself.)
    pub fn with_guards(&self) -> *const u8 {
        self.ptr().as_ptr()
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the block holds GUARD + len + GUARD initialised bytes (see `make`).
        unsafe { std::slice::from_raw_parts(self.ptr().as_ptr().add(GUARD), self.len) }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            buffer_pool::give(block);
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload").field("len", &self.len).finish()
    }
}

/// A block for a payload of `len` bytes with its guards zeroed and the payload not yet written,
/// or `None` when the allocator refuses. Not a `Payload` until every byte is written.
fn allocate(len: usize) -> Option<(Block, usize)> {
    let total = len.checked_add(2 * GUARD)?;
    Layout::array::<u8>(total).ok()?;
    let block = buffer_pool::take(total)?;
    let base = block.ptr.as_ptr();
    // SAFETY: the block has at least `total` bytes; the guards are its first and last GUARD.
    unsafe {
        base.write_bytes(0, GUARD);
        base.add(GUARD + len).write_bytes(0, GUARD);
    }
    Some((block, len))
}

/// The payload area of an allocated block, to be written.
///
/// # Safety
/// `block` came from `allocate(len)`.
unsafe fn payload_area(block: &mut Block, len: usize) -> &mut [std::mem::MaybeUninit<u8>] {
    // SAFETY: the block holds GUARD + len + GUARD bytes; `&mut` makes the area unique.
    unsafe {
        std::slice::from_raw_parts_mut(
            block
                .ptr
                .as_ptr()
                .add(GUARD)
                .cast::<std::mem::MaybeUninit<u8>>(),
            len,
        )
    }
}

/// A block for a payload of `len` bytes with its guards zeroed and the payload written by
/// `write` (which must initialise all `len` bytes), or `None` when the allocator refuses.
fn make(len: usize, write: impl FnOnce(&mut [std::mem::MaybeUninit<u8>])) -> Option<Payload> {
    let (mut block, len) = allocate(len)?;
    // SAFETY: the block came from `allocate(len)`.
    write(unsafe { payload_area(&mut block, len) });
    Some(Payload {
        block: Some(block),
        len,
    })
}

/// Bytes [`PartialPayload::copy_from`] copies between two questions to its `keep_going`: short
/// enough to stay far below a normal scheduler's budget even into fresh pages (16 page faults),
/// long enough that the question costs nothing beside the copy.
pub const COPY_STEP: usize = 64 << 10;

/// A payload being copied in steps: [`try_partial`] allocates it, [`PartialPayload::copy_from`]
/// copies until done or told to stop (and later goes on where it stopped, on any thread), and
/// [`PartialPayload::finish`] turns the complete copy into a [`Payload`]. So a put can start on
/// a normal scheduler and, if it runs long, continue on a dirty one. Dropped unfinished, it gives
/// its block back (as its `Payload` does).
pub struct PartialPayload {
    /// Not read (nor handed out) before `written == len`: until then part of it is uninitialised.
    payload: Payload,
    written: usize,
}

/// A payload of `len` bytes to be copied in steps, or `None` when the allocator refuses.
pub fn try_partial(len: usize) -> Option<PartialPayload> {
    let (block, len) = allocate(len)?;
    Some(PartialPayload {
        payload: Payload {
            block: Some(block),
            len,
        },
        written: 0,
    })
}

impl PartialPayload {
    /// The payload's length.
    pub fn len(&self) -> usize {
        self.payload.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.payload.len == 0
    }

    /// Bytes copied so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Copies the rest of `src` (which must be the whole source: its length is the payload's), in
    /// steps of [`COPY_STEP`], asking `keep_going` before each step but the first. True when the
    /// copy is complete. Large payloads are written with non-temporal stores whatever the step
    /// (`stream::copy_part`).
    pub fn copy_from(&mut self, src: &[u8], keep_going: impl FnMut() -> bool) -> bool {
        assert_eq!(src.len(), self.payload.len, "copy_from the whole source");
        self.write_steps(keep_going, |dst, at, whole| {
            stream::copy_part(dst, &src[at..at + dst.len()], whole);
        })
    }

    /// As [`PartialPayload::copy_from`], setting the rest of the bytes to `byte` instead.
    pub fn fill_with(&mut self, byte: u8, keep_going: impl FnMut() -> bool) -> bool {
        self.write_steps(keep_going, |dst, _, whole| {
            stream::fill_part(dst, byte, whole)
        })
    }

    /// Writes the unwritten bytes in steps of [`COPY_STEP`] with `write(dst, offset, len)`,
    /// asking `keep_going` before each step but the first. True when every byte is written.
    fn write_steps(
        &mut self,
        mut keep_going: impl FnMut() -> bool,
        mut write: impl FnMut(&mut [std::mem::MaybeUninit<u8>], usize, usize),
    ) -> bool {
        let len = self.payload.len;
        let block = self
            .payload
            .block
            .as_mut()
            .expect("an unfinished payload has its block");
        // SAFETY: the block came from `allocate(len)`.
        let area = unsafe { payload_area(block, len) };
        let mut first = true;
        while self.written < len {
            if !first && !keep_going() {
                return false;
            }
            first = false;
            let end = (self.written + COPY_STEP).min(len);
            write(&mut area[self.written..end], self.written, len);
            self.written = end;
        }
        true
    }

    /// The payload, once every byte is copied; itself otherwise.
    pub fn finish(self) -> Result<Payload, Self> {
        if self.written < self.payload.len {
            return Err(self);
        }
        Ok(self.payload)
    }
}

impl std::fmt::Debug for PartialPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialPayload")
            .field("len", &self.payload.len)
            .field("written", &self.written)
            .finish()
    }
}

/// A copy of `src`, or `None` when the allocator refuses.
pub fn try_copy(src: &[u8]) -> Option<Payload> {
    make(src.len(), |dst| stream::copy(dst, src))
}

/// `size` bytes set to `fill`, or `None` when the allocator refuses. A zero fill above the
/// per-thread cache's blocks asks the allocator for zeroed memory, which for large sizes is fresh
/// pages that are never touched here.
pub fn try_filled(size: usize, fill: u8) -> Option<Payload> {
    try_filled_until(size, fill, || true).ok()
}

/// Bytes filled between two calls of `keep_going` in [`try_filled_until`] (a few ms of memset).
pub const FILL_CHUNK: usize = 16 << 20;

/// Why [`try_filled_until`] returned no buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillError {
    /// The allocator refused.
    Refused,
    /// `keep_going` said stop; the partial buffer was freed.
    Stopped,
}

/// As [`try_filled`], asking `keep_going` after every [`FILL_CHUNK`] bytes of a non-zero fill
/// whether to go on (e.g. whether the caller is still alive), so a fill of many GiB is never a
/// call that cannot be stopped.
pub fn try_filled_until(
    size: usize,
    fill: u8,
    mut keep_going: impl FnMut() -> bool,
) -> Result<Payload, FillError> {
    if fill == 0 && size > buffer_pool::MAX_BLOCK {
        return try_zeroed(size).ok_or(FillError::Refused);
    }
    let mut stopped = false;
    let made = make(size, |dst| {
        for (i, chunk) in dst.chunks_mut(FILL_CHUNK).enumerate() {
            if i > 0 && !keep_going() {
                // The payload is dropped below, unread: the rest may stay uninitialised.
                stopped = true;
                return;
            }
            stream::fill(chunk, fill);
        }
    });
    match made {
        None => Err(FillError::Refused),
        Some(_) if stopped => Err(FillError::Stopped),
        Some(p) => Ok(p),
    }
}

/// Where large zeroed payloads come from: a function returning null or `layout.size()` zeroed
/// bytes that the global allocator's `dealloc` frees with `layout` (as `alloc_zeroed` does).
pub type ZeroedSource = unsafe fn(Layout) -> *mut u8;

static ZEROED_SOURCE: OnceLock<ZeroedSource> = OnceLock::new();

/// Makes `source` the origin of large zeroed payloads instead of `alloc_zeroed` (once; `false` if
/// one was set before).
///
/// Why: an allocator meets a zeroed request from a freed extent by discarding its pages
/// (jemalloc: `MADV_DONTNEED`), which is what makes such a payload free of writes. In an arena
/// shared with copies, those are the warm pages the next copy would have reused, and it faults
/// every page back in instead. The NIF gives zeroed payloads an arena of their own.
///
/// # Safety
/// `source` must keep the contract of [`ZeroedSource`] for every layout, on every thread.
pub unsafe fn set_zeroed_source(source: ZeroedSource) -> bool {
    ZEROED_SOURCE.set(source).is_ok()
}

/// Large zeroed payloads come from the zeroed source (default `alloc_zeroed`), which maps fresh
/// pages it never has to write.
fn try_zeroed(size: usize) -> Option<Payload> {
    let total = size.checked_add(2 * GUARD)?;
    let layout = Layout::array::<u8>(total).ok()?;
    let source = ZEROED_SOURCE.get().copied().unwrap_or(alloc_zeroed);
    // SAFETY: the layout has a non-zero size (at least the guards). A non-null result points at
    // `total` zeroed bytes that the global allocator frees with exactly this layout (the
    // contract of `ZeroedSource`), which is what `buffer_pool` frees a block of a size outside
    // its classes with.
    let ptr = NonNull::new(unsafe { source(layout) })?;
    Some(Payload {
        block: Some(Block { ptr, layout }),
        len: size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_in_steps_is_exact_and_keeps_its_guards_zero() {
        // Across the streaming threshold, so both ways of writing are taken step by step.
        for len in [
            1,
            COPY_STEP - 1,
            COPY_STEP + 1,
            stream::STREAM_MIN + 3 * COPY_STEP + 17,
        ] {
            let src: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut p = try_partial(len).unwrap();
            let mut steps = 1;
            // One step per call until done.
            while !p.copy_from(&src, || false) {
                steps += 1;
                p = p.finish().expect_err("unfinished");
            }
            assert_eq!(steps, len.div_ceil(COPY_STEP));
            let payload = p.finish().unwrap();
            assert_eq!(&*payload, &src[..]);
            // SAFETY: `with_guards` is readable for len + 2 * GUARD bytes.
            let all = unsafe { std::slice::from_raw_parts(payload.with_guards(), len + 2 * GUARD) };
            assert!(all[..GUARD]
                .iter()
                .chain(&all[GUARD + len..])
                .all(|&b| b == 0));
        }
    }

    #[test]
    fn a_fill_in_steps_is_exact_and_keeps_its_guards_zero() {
        for len in [1, COPY_STEP + 1, stream::STREAM_MIN + 2 * COPY_STEP + 5] {
            let mut p = try_partial(len).unwrap();
            let mut steps = 1;
            while !p.fill_with(0xA5, || false) {
                steps += 1;
                p = p.finish().expect_err("unfinished");
            }
            assert_eq!(steps, len.div_ceil(COPY_STEP));
            let payload = p.finish().unwrap();
            assert!(payload.iter().all(|&b| b == 0xA5));
            assert_eq!(payload.len(), len);
            // SAFETY: `with_guards` is readable for len + 2 * GUARD bytes.
            let all = unsafe { std::slice::from_raw_parts(payload.with_guards(), len + 2 * GUARD) };
            assert!(all[..GUARD]
                .iter()
                .chain(&all[GUARD + len..])
                .all(|&b| b == 0));
        }
    }

    #[test]
    fn copies_fills_and_zeroes() {
        assert_eq!(&*try_copy(b"abc").unwrap(), b"abc");
        assert_eq!(&*try_filled(3, 7).unwrap(), &[7, 7, 7]);
        assert_eq!(&*try_filled(4, 0).unwrap(), &[0, 0, 0, 0]);
        assert!(try_filled(0, 0).unwrap().is_empty());
        assert!(try_filled(0, 9).unwrap().is_empty());
    }

    #[test]
    fn large_zeroed_payloads_come_from_the_zeroed_source() {
        use std::cell::Cell;
        thread_local! {
            // Per thread: other tests may make zeroed payloads at the same time.
            static ASKED: Cell<usize> = const { Cell::new(0) };
        }
        unsafe fn counting(layout: Layout) -> *mut u8 {
            ASKED.with(|a| a.set(a.get() + layout.size()));
            // SAFETY: as `try_zeroed`'s own call: a non-zero size.
            unsafe { alloc_zeroed(layout) }
        }
        // SAFETY: `counting` is `alloc_zeroed`, counted.
        assert!(unsafe { set_zeroed_source(counting) });
        assert!(!unsafe { set_zeroed_source(counting) }, "set once");
        let size = buffer_pool::MAX_BLOCK + 1;
        let zeroed = try_filled(size, 0).unwrap();
        assert!(zeroed.iter().all(|&b| b == 0));
        assert_eq!(ASKED.with(Cell::get), size + 2 * GUARD);
        // Filled and small payloads do not ask it.
        drop((try_filled(size, 1), try_filled(64, 0), try_copy(&[1; 64])));
        assert_eq!(ASKED.with(Cell::get), size + 2 * GUARD);
    }

    #[test]
    fn long_fills_stop_when_told() {
        let size = 3 * FILL_CHUNK + 5;
        let mut asked = 0;
        let full = try_filled_until(size, 9, || {
            asked += 1;
            true
        })
        .unwrap();
        assert_eq!(asked, 3, "asked between chunks only");
        assert!(full.len() == size && full.iter().all(|&b| b == 9));
        let mut asked = 0;
        let stopped = try_filled_until(size, 9, || {
            asked += 1;
            asked < 2
        });
        assert_eq!(stopped.unwrap_err(), FillError::Stopped);
        assert_eq!(asked, 2);
        // One chunk or a zero fill: never asked.
        assert!(try_filled_until(10, 1, || false).is_ok());
        assert!(try_filled_until(size, 0, || false).is_ok());
    }

    #[test]
    fn impossible_sizes_fail_instead_of_aborting() {
        // Refused by the layout check before the allocator is asked: runs under Miri too.
        assert!(try_filled(usize::MAX, 0).is_none());
        // Refused by the allocator. Miri cannot model that: it stops with "resource exhaustion"
        // instead of returning null, so this half runs only natively.
        if !cfg!(miri) {
            assert!(try_filled(usize::MAX / 2, 1).is_none());
        }
    }

    #[test]
    fn payloads_keep_readable_zero_guards_around_them() {
        for p in [
            try_copy(b"abc").unwrap(),
            try_filled(5, 9).unwrap(),
            try_filled(4096, 0).unwrap(),
            try_copy(b"").unwrap(),
        ] {
            let len = p.len();
            // SAFETY: the guards are part of the same allocation as the payload.
            let around = unsafe { std::slice::from_raw_parts(p.with_guards(), len + 2 * GUARD) };
            assert_eq!(around[GUARD..GUARD + len], *p);
            assert!(around[..GUARD].iter().all(|&b| b == 0));
            assert!(around[GUARD + len..].iter().all(|&b| b == 0));
        }
    }
}
