//! Fallible allocation of the native buffers: an allocation failure becomes
//! [`StoreError::AllocFailed`](crate::StoreError::AllocFailed) instead of an abort that would take
//! the whole VM down.

use std::alloc::{alloc_zeroed, Layout};

/// A copy of `src`, or `None` when the allocator refuses.
pub fn try_copy(src: &[u8]) -> Option<Box<[u8]>> {
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(src.len()).ok()?;
    v.extend_from_slice(src);
    Some(v.into_boxed_slice())
}

/// `size` bytes set to `fill`, or `None` when the allocator refuses. A zero fill asks the allocator
/// for zeroed memory, which for large sizes is fresh pages that are never touched here.
pub fn try_filled(size: usize, fill: u8) -> Option<Box<[u8]>> {
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
) -> Result<Box<[u8]>, FillError> {
    if fill == 0 {
        return try_zeroed(size).ok_or(FillError::Refused);
    }
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(size).map_err(|_| FillError::Refused)?;
    while v.len() < size {
        if !v.is_empty() && !keep_going() {
            return Err(FillError::Stopped);
        }
        let n = (size - v.len()).min(FILL_CHUNK);
        v.resize(v.len() + n, fill);
    }
    Ok(v.into_boxed_slice())
}

fn try_zeroed(size: usize) -> Option<Box<[u8]>> {
    if size == 0 {
        return Some(Box::new([]));
    }
    let layout = Layout::array::<u8>(size).ok()?;
    // SAFETY: the layout has a non-zero size. A non-null result points at `size` zeroed bytes
    // allocated with the global allocator and exactly this layout, which is what `Box<[u8]>` of
    // length `size` frees with.
    unsafe {
        let ptr = alloc_zeroed(layout);
        if ptr.is_null() {
            return None;
        }
        Some(Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_fills_and_zeroes() {
        assert_eq!(&*try_copy(b"abc").unwrap(), b"abc");
        assert_eq!(&*try_filled(3, 7).unwrap(), &[7, 7, 7]);
        assert_eq!(&*try_filled(4, 0).unwrap(), &[0, 0, 0, 0]);
        assert!(try_filled(0, 0).unwrap().is_empty());
        assert!(try_filled(0, 9).unwrap().is_empty());
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
}
