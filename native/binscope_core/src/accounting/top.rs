//! Selections of the largest few of a whole node's figures, so that a scan of a million
//! processes builds terms for the few it reports instead of a record per process.
//!
//! - [`top_by`]: the `k` largest of `n` keyed items (a bounded heap: O(n log k), no sort of all).
//! - [`top_rows`]: the same over rows of packed native-endian `u64` fields (the attribution's
//!   per-process figures as the NIF hands them to Elixir), by one field.

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

/// The indexes of the `k` rows of `packed` (rows of `width` native-endian `u64`s) with the
/// largest field `field`, largest first, equal ones the later row first (as [`top_by`]). `None`
/// when `packed` is not whole rows or `field` is not one of them.
pub fn top_rows(packed: &[u8], width: usize, field: usize, k: usize) -> Option<Vec<usize>> {
    let row = width.checked_mul(8).filter(|&r| r > 0 && field < width)?;
    if !packed.len().is_multiple_of(row) {
        return None;
    }
    let at = |i: usize| {
        let from = i * row + field * 8;
        u64::from_ne_bytes(packed[from..from + 8].try_into().expect("8 bytes"))
    };
    Some(top_by(packed.len() / row, k, at))
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
    fn top_rows_ranks_by_one_field_and_refuses_partial_rows() {
        let packed = rows(&[[1, 50, 0], [2, 70, 0], [3, 50, 0], [4, 10, 0]]);
        assert_eq!(top_rows(&packed, 3, 1, 3), Some(vec![1, 2, 0]));
        assert_eq!(top_rows(&packed, 3, 0, 2), Some(vec![3, 2]));
        assert_eq!(top_rows(&packed, 3, 3, 2), None);
        assert_eq!(top_rows(&packed[..20], 3, 1, 2), None);
        assert_eq!(top_rows(&packed, 0, 0, 2), None);
        assert_eq!(top_rows(&[], 3, 1, 2), Some(vec![]));
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
        fn top_rows_matches_top_by_on_the_field(v in prop::collection::vec([0u64..6, 0u64..6, 0u64..6], 0..100), f in 0usize..3, k in 0usize..20) {
            prop_assert_eq!(top_rows(&rows(&v), 3, f, k), Some(top_by(v.len(), k, |i| v[i][f])));
        }
    }
}
