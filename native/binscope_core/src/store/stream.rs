//! How payload bytes are written: large copies and fills with non-temporal stores.
//!
//! A payload of megabytes is written once and read later, if at all, by whichever process gets
//! the binary: keeping it in this core's cache buys nothing. Ordinary stores first read every
//! destination line into the cache (a read for ownership) and then evict other data to make room;
//! non-temporal stores write whole lines to memory directly. Measured on the project's machine
//! (AMD EPYC, 2 cores, 32 MiB L3) copying into a ring of 12 destinations, GiB/s, glibc `memcpy`
//! against the loop below:
//!
//! | size | `memcpy`, destinations cold | warm (in L3) | non-temporal |
//! | --- | --- | --- | --- |
//! | 1 MiB | 30.5 | 50.5 | 39.5-40.4 |
//! | 2 MiB | 18.4 | 38.0 | 39.7-40.7 |
//! | 4 MiB | 11.4 | 29.6 | 40.9-41.1 |
//! | 16 MiB | 3.6 | 24.8 | 36.0-37.9 |
//!
//! In the VM (store bench's steady cycle, five runs against three, alternated builds) a 16 MiB
//! `Store.put` went from 2.68-3.41 ms to 1.49-2.86 ms (medians 2.95 / 2.05 ms) and a 16 MiB
//! `alloc` with fill 1 from 2.25-3.05 ms to 0.96-3.21 ms (2.32 / 1.22 ms); 1 MiB did not move.
//!
//! The threshold was 2 MiB (from the ring above) until the puts in the VM's steady cycle were
//! measured at sizes under it (2026-12-02, `Store.put` in a window of 8 on a normal scheduler,
//! 3 s loops, builds alternated): 256 KiB 19.8-21.0 µs with `memcpy` against 19.7-19.8 streamed,
//! 384 KiB 36.3 against 28.2, 512 KiB 50.6-52.1 against 37.1-38.0, 768 KiB 79.0 against 56.4,
//! 1 MiB 118-122 against 67-72. In the VM the destinations are colder than in the ring: the VM
//! frees a binary only at a collection and runs its destructor later still, so more payloads are
//! in circulation than this core's 512 KiB of L2 holds.
//!
//! So from [`STREAM_MIN`] on (where streaming first won), and below it `memcpy` / `memset`,
//! which win while the destination fits the cache. SSE2 streaming stores are part of x86-64 itself (no feature detection; AVX2
//! stores measured the same, the memory being the limit). Elsewhere, and under Miri, every size
//! takes the ordinary path.

use std::mem::MaybeUninit;

/// The smallest copy or fill written with non-temporal stores.
pub const STREAM_MIN: usize = 512 << 10;

/// Copies `src` into `dst`, which has the same length.
pub fn copy(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    copy_part(dst, src, src.len());
}

/// As [`copy`], for one part of a copy of `whole` bytes made in parts: the way of writing is
/// chosen by the whole copy's size, so a large copy made in steps streams every step.
pub fn copy_part(dst: &mut [MaybeUninit<u8>], src: &[u8], whole: usize) {
    assert_eq!(dst.len(), src.len(), "copy into a slice of the same length");
    let (d, s, len) = (dst.as_mut_ptr().cast::<u8>(), src.as_ptr(), src.len());
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = whole;
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if whole >= STREAM_MIN {
        // SAFETY: `d` and `s` are valid for `len` bytes (one slice each) and do not overlap (a
        // `&mut` and a `&` slice).
        return unsafe { x86::copy(d, s, len) };
    }
    // SAFETY: as above.
    unsafe { std::ptr::copy_nonoverlapping(s, d, len) }
}

/// Sets every byte of `dst` to `byte`.
pub fn fill(dst: &mut [MaybeUninit<u8>], byte: u8) {
    fill_part(dst, byte, dst.len());
}

/// As [`fill`], for one part of a fill of `whole` bytes made in parts (chosen by the whole
/// fill's size, as [`copy_part`] is).
pub fn fill_part(dst: &mut [MaybeUninit<u8>], byte: u8, whole: usize) {
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = whole;
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if whole >= STREAM_MIN {
        // SAFETY: the slice is valid for writes of its length.
        return unsafe { x86::fill(dst.as_mut_ptr().cast::<u8>(), byte, dst.len()) };
    }
    dst.fill(MaybeUninit::new(byte));
}

#[cfg(all(target_arch = "x86_64", not(miri)))]
mod x86 {
    use std::arch::x86_64::{
        __m128i, _mm_loadu_si128, _mm_set1_epi8, _mm_sfence, _mm_stream_si128,
    };

    /// Bytes before the first 16-byte aligned address at or after `p` (at most `len`).
    fn head(p: *mut u8, len: usize) -> usize {
        ((16 - (p as usize & 15)) & 15).min(len)
    }

    /// # Safety
    /// `d` valid for `len` bytes of writes, `s` for `len` bytes of reads, not overlapping.
    pub unsafe fn copy(d: *mut u8, s: *const u8, len: usize) {
        let h = head(d, len);
        // SAFETY (whole body): every offset stays below `len`; `d + h` is 16-byte aligned, as
        // `_mm_stream_si128` requires; the fence orders the streaming stores before whatever
        // the caller does next (they are weakly ordered).
        unsafe {
            std::ptr::copy_nonoverlapping(s, d, h);
            let mut i = h;
            while i + 64 <= len {
                let a = _mm_loadu_si128(s.add(i).cast::<__m128i>());
                let b = _mm_loadu_si128(s.add(i + 16).cast::<__m128i>());
                let c = _mm_loadu_si128(s.add(i + 32).cast::<__m128i>());
                let e = _mm_loadu_si128(s.add(i + 48).cast::<__m128i>());
                _mm_stream_si128(d.add(i).cast::<__m128i>(), a);
                _mm_stream_si128(d.add(i + 16).cast::<__m128i>(), b);
                _mm_stream_si128(d.add(i + 32).cast::<__m128i>(), c);
                _mm_stream_si128(d.add(i + 48).cast::<__m128i>(), e);
                i += 64;
            }
            std::ptr::copy_nonoverlapping(s.add(i), d.add(i), len - i);
            _mm_sfence();
        }
    }

    /// # Safety
    /// `d` valid for `len` bytes of writes.
    pub unsafe fn fill(d: *mut u8, byte: u8, len: usize) {
        let h = head(d, len);
        // SAFETY: as in `copy`.
        unsafe {
            d.write_bytes(byte, h);
            let v = _mm_set1_epi8(byte as i8);
            let mut i = h;
            while i + 64 <= len {
                _mm_stream_si128(d.add(i).cast::<__m128i>(), v);
                _mm_stream_si128(d.add(i + 16).cast::<__m128i>(), v);
                _mm_stream_si128(d.add(i + 32).cast::<__m128i>(), v);
                _mm_stream_si128(d.add(i + 48).cast::<__m128i>(), v);
                i += 64;
            }
            d.add(i).write_bytes(byte, len - i);
            _mm_sfence();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uninit(len: usize) -> Vec<MaybeUninit<u8>> {
        (0..len).map(|_| MaybeUninit::new(0xAA)).collect()
    }

    fn bytes(v: &[MaybeUninit<u8>]) -> Vec<u8> {
        // SAFETY: every element was initialised by `uninit` and then written.
        v.iter().map(|b| unsafe { b.assume_init() }).collect()
    }

    #[test]
    fn copies_and_fills_every_byte_at_every_alignment_and_length() {
        // Around the threshold and at odd offsets, so the head, the streamed body and the tail
        // are all taken.
        let src: Vec<u8> = (0..STREAM_MIN + 300)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        for len in [
            0,
            1,
            15,
            63,
            64,
            65,
            STREAM_MIN - 1,
            STREAM_MIN,
            STREAM_MIN + 77,
        ] {
            for offset in [0, 1, 5, 15, 16, 33] {
                let mut dst = uninit(len + offset + 16);
                let s = &src[offset.min(src.len() - len)..][..len];
                copy(&mut dst[offset..offset + len], s);
                let out = bytes(&dst);
                assert_eq!(
                    &out[offset..offset + len],
                    s,
                    "copy len {len} offset {offset}"
                );
                assert!(out[..offset].iter().all(|&b| b == 0xAA), "before the copy");
                assert!(
                    out[offset + len..].iter().all(|&b| b == 0xAA),
                    "after the copy"
                );

                let mut dst = uninit(len + offset + 16);
                fill(&mut dst[offset..offset + len], 0x5C);
                let out = bytes(&dst);
                assert!(
                    out[offset..offset + len].iter().all(|&b| b == 0x5C),
                    "fill {len}"
                );
                assert!(out[..offset].iter().all(|&b| b == 0xAA), "before the fill");
                assert!(
                    out[offset + len..].iter().all(|&b| b == 0xAA),
                    "after the fill"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "same length")]
    fn copy_into_a_slice_of_another_length_panics() {
        copy(&mut uninit(3), b"ab");
    }
}
