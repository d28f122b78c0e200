//! NIFs of whole-node leak scans (prefixed `scan_`): selections over every process's figures
//! that return terms for the few processes reported, never one per process
//! (`binscope_core::leaks::select`). Both are dirty: one call covers a whole node.

use std::collections::HashSet;

use binscope_core::accounting::{store_key, BinRef, Snapshot};
use binscope_core::leaks::{full_ranking, top_by};
use rustler::{Binary, ListIterator, NifResult, Term};

use crate::accounting::SHARE_FIELDS;

/// Indexes (into the packed figures of `accounting_attribute`) of the `k` processes with the most
/// bytes only they reference (`uss`), then the largest `pss`; the later process first on ties.
#[rustler::nif(schedule = "DirtyCpu")]
fn scan_top_uss(packed: Binary, k: u64) -> NifResult<Vec<u64>> {
    let width = SHARE_FIELDS.len() * 8;
    if !packed.len().is_multiple_of(width) {
        return Err(rustler::Error::BadArg);
    }
    let field = |i: usize, f: usize| {
        let at = i * width + f * 8;
        u64::from_ne_bytes(packed[at..at + 8].try_into().expect("8 bytes"))
    };
    let n = packed.len() / width;
    Ok(top_by(n, k as usize, |i| (field(i, 2), field(i, 3)))
        .into_iter()
        .map(|i| i as u64)
        .collect())
}

/// A GC round's record `#binscope_gc{pid, binaries_before, binaries_after, reductions,
/// total_heap_size, stack_size, message_queue_len}` (include/binscope_collector.hrl; the Elixir
/// side checks that layout at compile time, `Binscope.Collector`): its binary lists (elements 2
/// and 3, the tag at 0) and heap plus stack words (elements 5 and 6).
fn push_round(item: Term, before: &mut Snapshot, after: &mut Snapshot) -> NifResult<u64> {
    let t = rustler::types::tuple::get_tuple(item)?;
    if t.len() != 8 {
        return Err(rustler::Error::BadArg);
    }
    for (term, snap) in [(t[2], &mut *before), (t[3], &mut *after)] {
        let list: ListIterator = term.decode()?;
        for b in list {
            let (key, size, refc): (u64, u64, u64) = b.decode()?;
            snap.push_ref(BinRef { key, size, refc });
        }
        snap.end_process();
    }
    let heap: u64 = t[5].decode()?;
    let stack: u64 = t[6].decode()?;
    Ok(heap.saturating_add(stack))
}

/// A process's figures in the order of `SHARE_FIELDS` (a list: rustler encodes tuples of up to 7).
type Share = Vec<u64>;

/// `{index, {refs, bytes, binaries}, retained, uss_before}`: one row of [`scan_full_rank`].
type FullRow = (u64, (u64, u64, u64), Share, u64);

/// The top `limit` of a full leak scan (`binscope_core::leaks::full_ranking`) from the GC
/// round's `results` (every collected process): `[{index, {refs, bytes, binaries}, retained,
/// uss_before}]`, `retained` the process's figures after the collections in the order of
/// `SHARE_FIELDS`. `live_store_keys`: the store entries that survived.
#[rustler::nif(schedule = "DirtyCpu")]
fn scan_full_rank(
    results: ListIterator,
    live_store_keys: Vec<u64>,
    word_size: u64,
    limit: u64,
) -> NifResult<Vec<FullRow>> {
    let (mut before, mut after) = (Snapshot::new(), Snapshot::new());
    let mut heap = Vec::new();
    for item in results {
        let words = push_round(item, &mut before, &mut after)?;
        heap.push(words.saturating_mul(word_size));
    }
    let live: HashSet<u64> = live_store_keys.into_iter().collect();
    let rows = full_ranking(
        &before,
        &after,
        &heap,
        |id| live.contains(&store_key(id)),
        limit as usize,
    );
    Ok(rows
        .into_iter()
        .map(|r| {
            let p = r.retained;
            (
                r.index as u64,
                (r.reclaim.refs, r.reclaim.bytes, r.reclaim.binaries),
                vec![
                    p.refs,
                    p.distinct,
                    p.uss,
                    p.pss,
                    p.shared,
                    p.store_bytes,
                    p.unresolved,
                    p.bytes,
                ],
                r.uss_before,
            )
        })
        .collect())
}
