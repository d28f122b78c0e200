//! Selections of the largest few of a whole node's figures, so that a scan of a million
//! processes builds terms for the few it reports instead of a record per process.
//!
//! - [`top_by`]: the `k` largest of `n` keyed items (a bounded heap: O(n log k), no sort of all).
//! - [`Rows`]: rows of packed native-endian `u64` fields (the attribution's per-process figures
//!   as the NIF hands them to Elixir), read in place.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The indexes of the `k` items with the largest `key(i)` (`i` in `0..n`), largest first; equal
/// keys rank the later index first (the order of a descending sort of `(key, index)`).
pub fn top_by<K: Ord + Copy>(n: usize, k: usize, key: impl Fn(usize) -> K) -> Vec<usize> {
    // At most `n`: a `k` from outside (any u64) never sizes the heap past the items.
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    // A min-heap of the best `k` so far: its root is the one to beat.
    let mut heap: BinaryHeap<Reverse<(K, usize)>> = BinaryHeap::with_capacity(k + 1);
    for i in 0..n {
        let e = (key(i), i);
        if heap.len() < k {
            heap.push(Reverse(e));
        } else if let Some(Reverse(min)) = heap.peek() {
            if e > *min {
                heap.pop();
                heap.push(Reverse(e));
            }
        }
    }
    let mut out: Vec<(K, usize)> = heap.into_iter().map(|Reverse(e)| e).collect();
    out.sort_unstable_by(|a, b| b.cmp(a));
    out.into_iter().map(|(_, i)| i).collect()
}

/// Rows of native-endian `u64` fields packed one after another (the attribution's per-process
/// figures as the NIF hands them to Elixir), read in place.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    packed: &'a [u8],
    width: usize,
}

impl<'a> Rows<'a> {
    /// `packed` as rows of `width` fields; `None` unless it is whole rows of at least one field.
    pub fn new(packed: &'a [u8], width: usize) -> Option<Self> {
        let row = width.checked_mul(8).filter(|&r| r > 0)?;
        packed
            .len()
            .is_multiple_of(row)
            .then_some(Rows { packed, width })
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.packed.len() / (self.width * 8)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    /// How many fields a row has.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Field `field` (below `width()`) of row `i` (below `len()`).
    pub fn field(&self, i: usize, field: usize) -> u64 {
        assert!(field < self.width, "field {field} of {}", self.width);
        let from = (i * self.width + field) * 8;
        u64::from_ne_bytes(self.packed[from..from + 8].try_into().expect("8 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn top_by_takes_the_largest_later_index_first_on_ties() {
        let v = [5u64, 1, 9, 5, 7, 9];
        assert_eq!(top_by(v.len(), 3, |i| v[i]), vec![5, 2, 4]);
        assert_eq!(top_by(v.len(), 0, |i| v[i]), Vec::<usize>::new());
        assert_eq!(top_by(v.len(), 10, |i| v[i]), vec![5, 2, 4, 3, 0, 1]);
        assert_eq!(top_by(0, 3, |_| 0u64), Vec::<usize>::new());
        assert_eq!(top_by(v.len(), usize::MAX, |i| v[i]).len(), v.len());
    }

    fn rows(v: &[[u64; 3]]) -> Vec<u8> {
        v.iter().flatten().flat_map(|x| x.to_ne_bytes()).collect()
    }

    #[test]
    fn rows_read_fields_in_place_and_refuse_partial_rows() {
        let packed = rows(&[[1, 50, 0], [2, 70, 0], [3, 50, 9]]);
        let r = Rows::new(&packed, 3).expect("whole rows");
        assert_eq!((r.len(), r.width(), r.is_empty()), (3, 3, false));
        assert_eq!((r.field(1, 1), r.field(2, 2), r.field(0, 0)), (70, 9, 1));
        assert_eq!(top_by(r.len(), 2, |i| r.field(i, 1)), vec![1, 2]);
        assert!(Rows::new(&packed[..20], 3).is_none());
        assert!(Rows::new(&packed, 0).is_none());
        assert!(Rows::new(&[], 3).expect("no rows").is_empty());
    }

    #[test]
    #[should_panic(expected = "field 3 of 3")]
    fn a_field_past_the_row_panics() {
        let packed = rows(&[[1, 2, 3]]);
        Rows::new(&packed, 3).expect("one row").field(0, 3);
    }

    proptest! {
        #[test]
        fn top_by_is_a_prefix_of_the_sorted_order(v in prop::collection::vec((0u64..20, 0u64..5), 0..200), k in 0usize..30) {
            let mut all: Vec<((u64, u64), usize)> = v.iter().copied().zip(0..).collect();
            all.sort_by(|a, b| b.cmp(a));
            let want: Vec<usize> = all.into_iter().take(k).map(|(_, i)| i).collect();
            prop_assert_eq!(top_by(v.len(), k, |i| v[i]), want);
        }

        #[test]
        fn rows_read_back_what_was_packed(v in prop::collection::vec([any::<u64>(), any::<u64>(), any::<u64>()], 0..100)) {
            let packed = rows(&v);
            let r = Rows::new(&packed, 3).expect("whole rows");
            prop_assert_eq!(r.len(), v.len());
            for (i, row) in v.iter().enumerate() {
                for (f, x) in row.iter().enumerate() {
                    prop_assert_eq!(r.field(i, f), *x);
                }
            }
        }
    }
}
