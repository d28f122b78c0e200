//! A dense index of binary keys: every distinct key gets the next slot (0, 1, 2... in the order
//! keys are first seen), as `HashMap::entry(key).or_insert(len)` gives, in an open-addressing
//! table whose probes the caller can prefetch a few keys ahead.
//!
//! Why not a `HashMap`: at a million processes the table is far larger than the caches and
//! every lookup is a cache miss. Measured with one binary per process (perf, 1M processes):
//! about 130 ns a key, 70% of the whole attribution. Prefetched ahead, several misses overlap
//! (criterion `attribution`: 1M processes, the index's effect side by side).
//!
//! Keys are binary addresses and store keys (see [`super`]): well spread after one multiply,
//! and not chosen by anyone hostile. The table keeps its load at most 3/4 and grows by doubling
//! past that, so a wrong capacity hint costs time, never a wrong slot.

/// See the module documentation.
pub(crate) struct KeyIndex {
    /// `[key, slot + 1]` per position; `slot + 1 == 0` marks an empty one (a zeroed table is an
    /// empty one: allocated zeroed, its pages are mapped as they are first probed).
    table: Vec<[u64; 2]>,
    /// `64 - log2(table.len())`: a position is the top bits of the key's product.
    shift: u32,
    len: usize,
}

/// Fibonacci hashing: the multiply spreads the low, regular bits of addresses into the top ones.
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

impl KeyIndex {
    /// An index with room for `keys` distinct keys before it grows.
    pub(crate) fn with_capacity(keys: usize) -> Self {
        let size = (keys.saturating_add(keys / 3)).max(16).next_power_of_two();
        KeyIndex {
            table: zeroed(size),
            shift: 64 - size.trailing_zeros(),
            len: 0,
        }
    }

    /// Distinct keys seen.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn position(&self, key: u64) -> usize {
        (key.wrapping_mul(MULTIPLIER) >> self.shift) as usize
    }

    /// Asks the CPU to bring `key`'s first position into the cache: call it for a key a few
    /// lookups before [`KeyIndex::slot`] of it. Only a hint (nothing on other targets).
    #[inline]
    pub(crate) fn prefetch(&self, key: u64) {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        {
            let p = self.table[self.position(key)].as_ptr();
            // SAFETY: a prefetch reads nothing (it cannot fault), and `p` points into the table.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        let _ = key;
    }

    /// `key`'s slot, and whether this call gave it (the key was not seen before).
    #[inline]
    pub(crate) fn slot(&mut self, key: u64) -> (u32, bool) {
        let mask = self.table.len() - 1;
        let mut i = self.position(key);
        loop {
            let [k, s] = self.table[i];
            if s == 0 {
                break;
            }
            if k == key {
                return ((s - 1) as u32, false);
            }
            i = (i + 1) & mask;
        }
        let slot = self.len as u32;
        self.table[i] = [key, u64::from(slot) + 1];
        self.len += 1;
        if self.len > self.table.len() / 4 * 3 {
            self.grow();
        }
        (slot, true)
    }

    fn grow(&mut self) {
        let size = self.table.len() * 2;
        let old = std::mem::replace(&mut self.table, zeroed(size));
        self.shift -= 1;
        let mask = self.table.len() - 1;
        for [k, s] in old.into_iter().filter(|e| e[1] != 0) {
            let mut i = self.position(k);
            while self.table[i][1] != 0 {
                i = (i + 1) & mask;
            }
            self.table[i] = [k, s];
        }
    }
}

/// A table of `size` empty positions, written out: allocated zeroed (`vec![[0; 2]; size]`),
/// jemalloc hands a large block back to the kernel to get zeroed pages, and every call then
/// pays a page fault per 4 KiB it probes (most of the time at a million processes).
fn zeroed(size: usize) -> Vec<[u64; 2]> {
    let mut t = Vec::with_capacity(size);
    t.resize(size, [0; 2]);
    t
}

/// How many keys ahead a walk prefetches: enough misses in flight to overlap, few enough that
/// the first ones are still cached when their turn comes.
pub(crate) const PREFETCH_AHEAD: usize = 16;

/// As [`PREFETCH_AHEAD`], for walks that go process by process (most processes list one or two
/// binaries).
pub(crate) const PREFETCH_PROCESSES: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Slots as `HashMap::entry(key).or_insert(len)` gives them, for `keys` in order.
    fn reference(keys: &[u64]) -> Vec<(u32, bool)> {
        let mut m = HashMap::new();
        keys.iter()
            .map(|&k| {
                let next = m.len() as u32;
                let s = *m.entry(k).or_insert(next);
                (s, s == next)
            })
            .collect()
    }

    fn indexed(keys: &[u64], capacity: usize) -> Vec<(u32, bool)> {
        let mut ix = KeyIndex::with_capacity(capacity);
        keys.iter()
            .enumerate()
            .map(|(i, &k)| {
                if let Some(&ahead) = keys.get(i + PREFETCH_AHEAD) {
                    ix.prefetch(ahead);
                }
                ix.slot(k)
            })
            .collect()
    }

    #[test]
    fn slots_are_first_seen_order_with_key_zero_and_the_largest_keys() {
        let keys = [0, 5, 0, u64::MAX, 5, 1 << 62, u64::MAX, 7];
        assert_eq!(indexed(&keys, 4), reference(&keys));
        assert_eq!(indexed(&keys, 4)[3], (2, true));
    }

    #[test]
    fn grows_past_a_wrong_capacity_hint() {
        // Addresses 16 bytes apart, then a stride of 2^20 (every key's low bits the same).
        let keys: Vec<u64> = (0..50_000u64)
            .map(|i| 0x7f00_0000_0000 + 16 * i)
            .chain((0..5_000u64).map(|i| i << 20))
            .chain((0..50_000u64).map(|i| 0x7f00_0000_0000 + 32 * i))
            .collect();
        let mut ix = KeyIndex::with_capacity(1);
        let got: Vec<_> = keys.iter().map(|&k| ix.slot(k)).collect();
        assert_eq!(got, reference(&keys));
        assert_eq!(ix.len(), reference(&keys).iter().filter(|s| s.1).count());
        // Load at most 3/4 after every growth.
        assert!(ix.len() <= ix.table.len() / 4 * 3);
    }

    proptest! {
        #![proptest_config(if cfg!(miri) {
            ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() }
        } else {
            ProptestConfig::default()
        })]

        /// Any keys (repeats, clusters of near addresses, keys equal in their low bits), any
        /// capacity hint: the slots a `HashMap` gives.
        #[test]
        fn slots_are_those_of_a_hash_map(
            keys in prop::collection::vec(
                prop_oneof![any::<u64>(), 0u64..64, (0u64..64).prop_map(|k| k << 40)],
                0..600,
            ),
            capacity in 0usize..700,
        ) {
            prop_assert_eq!(indexed(&keys, capacity), reference(&keys));
        }
    }
}
