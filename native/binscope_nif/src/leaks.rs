//! NIFs of `Binscope.Leaks` (prefixed `leaks_`): term conversion around `binscope_core::leaks`,
//! on the calling node: the shortlist of a targeted scan, what a GC round gave back, the ranking
//! of a full scan, and the suggestions for the results.

use std::collections::HashSet;

use binscope_core::accounting::{store_key, Snapshot};
use binscope_core::leaks::{
    full_ranking, likely_garbage, pinned_bytes, rank, suggest, top_by, waste, Candidate, Facts,
    Suggestion,
};
use rustler::{Binary, ListIterator, NifMap, NifResult, NifUnitEnum, Term};

use crate::accounting::{badarg, bin_ref, share_fields, tuple_array, SHARE_FIELDS};

#[derive(NifMap)]
struct FactsMap {
    reclaimed_bytes: u64,
    retained_binary_bytes: u64,
    retained_binaries: u64,
    heap_bytes: u64,
    message_queue_len: u64,
    reductions_delta: u64,
    otp_behaviour: bool,
    fullsweep_after: u64,
    minor_gcs: u64,
    system_process: bool,
    passive_recv: bool,
    off_heap_queue: bool,
}

/// `binscope_core::leaks::Suggestion` as an atom (`:hibernate_after`, ..., `:none`).
#[derive(NifUnitEnum)]
enum SuggestionAtom {
    HibernateAfter,
    HibernateIdle,
    FullsweepAfter,
    BinaryCopy,
    OffHeapQueue,
    None,
}

impl From<Suggestion> for SuggestionAtom {
    fn from(s: Suggestion) -> Self {
        match s {
            Suggestion::HibernateAfter => SuggestionAtom::HibernateAfter,
            Suggestion::HibernateIdle => SuggestionAtom::HibernateIdle,
            Suggestion::FullsweepAfter => SuggestionAtom::FullsweepAfter,
            Suggestion::BinaryCopy => SuggestionAtom::BinaryCopy,
            Suggestion::OffHeapQueue => SuggestionAtom::OffHeapQueue,
            Suggestion::None => SuggestionAtom::None,
        }
    }
}

impl From<FactsMap> for Facts {
    fn from(facts: FactsMap) -> Self {
        Facts {
            reclaimed_bytes: facts.reclaimed_bytes,
            retained_binary_bytes: facts.retained_binary_bytes,
            retained_binaries: facts.retained_binaries,
            heap_bytes: facts.heap_bytes,
            message_queue_len: facts.message_queue_len,
            reductions_delta: facts.reductions_delta,
            otp_behaviour: facts.otp_behaviour,
            fullsweep_after: facts.fullsweep_after,
            minor_gcs: facts.minor_gcs,
            system_process: facts.system_process,
            passive_recv: facts.passive_recv,
            off_heap_queue: facts.off_heap_queue,
        }
    }
}

/// `[{suggestion, reason, pinned_bytes, waste_bytes}]`, one per process's figures, in order.
/// Dirty: one call for every result of a run (`limit:` of them).
#[rustler::nif(schedule = "DirtyCpu")]
fn leaks_suggest(facts: Vec<FactsMap>) -> Vec<(SuggestionAtom, String, u64, u64)> {
    facts
        .into_iter()
        .map(|facts| {
            let f = Facts::from(facts);
            let (s, reason) = suggest(&f);
            (s.into(), reason, pinned_bytes(&f), waste(&f))
        })
        .collect()
}

/// `[{index, likely_garbage_bytes}]`, most likely garbage first, for candidates given as
/// `{uss, vheap_bytes, old_vheap_bytes, reductions_delta, message_queue_len}`. Dirty: the
/// shortlist grows with the `candidates:` option.
#[rustler::nif(schedule = "DirtyCpu")]
fn leaks_rank(candidates: Vec<(u64, u64, u64, u64, u64)>) -> Vec<(u64, u64)> {
    let cs: Vec<Candidate> = candidates
        .into_iter()
        .map(|(uss, v, ov, r, q)| Candidate {
            uss,
            vheap_bytes: v,
            old_vheap_bytes: ov,
            reductions_delta: r,
            message_queue_len: q,
        })
        .collect();
    rank(&cs)
        .into_iter()
        .map(|i| (i as u64, likely_garbage(&cs[i])))
        .collect()
}

// Whole-node selections: they return terms for the few processes reported, never one per
// process (`binscope_core::leaks::select`). Both are dirty: one call covers a whole node.

/// Indexes (into the packed figures of `accounting_attribute`) of the `k` processes with the most
/// bytes only they reference (`uss`), then the largest `pss`; the later process first on ties.
#[rustler::nif(schedule = "DirtyCpu")]
fn leaks_top_uss(packed: Binary, k: u64) -> NifResult<Vec<u64>> {
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
    // Read in place: a `Vec` per record and per reference was most of this NIF at 1M processes.
    let [_, _, bins_before, bins_after, _, heap, stack, _] =
        tuple_array(item).ok_or_else(badarg)?;
    for (term, snap) in [(bins_before, &mut *before), (bins_after, &mut *after)] {
        let list: ListIterator = term.decode()?;
        for b in list {
            snap.push_ref(bin_ref(b)?);
        }
        snap.end_process();
    }
    let heap: u64 = heap.decode()?;
    let stack: u64 = stack.decode()?;
    Ok(heap.saturating_add(stack))
}

/// A process's figures in the order of `SHARE_FIELDS` (a list: rustler encodes tuples of up to 7).
type Share = Vec<u64>;

/// `{index, {refs, bytes, binaries}, retained, uss_before}`: one row of [`leaks_full_rank`].
type FullRow = (u64, (u64, u64, u64), Share, u64);

/// The top `limit` of a full leak scan (`binscope_core::leaks::full_ranking`) from the GC
/// round's `results` (every collected process): `[{index, {refs, bytes, binaries}, retained,
/// uss_before}]`, `retained` the process's figures after the collections in the order of
/// `SHARE_FIELDS`. `live_store_keys`: the store entries that survived.
#[rustler::nif(schedule = "DirtyCpu")]
fn leaks_full_rank(
    results: Term,
    live_store_keys: Vec<u64>,
    word_size: u64,
    limit: u64,
) -> NifResult<Vec<FullRow>> {
    // Sized for one reference a process before and after (most hold none or one): a whole
    // node's round decodes without growing through copies into fresh pages.
    let n = results.list_length()?;
    let (mut before, mut after) = (Snapshot::with_capacity(n, n), Snapshot::with_capacity(n, n));
    let mut heap = Vec::with_capacity(n);
    for item in results.into_list_iterator()? {
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
            (
                r.index as u64,
                (r.reclaim.refs, r.reclaim.bytes, r.reclaim.binaries),
                share_fields(&r.retained).to_vec(),
                r.uss_before,
            )
        })
        .collect())
}
