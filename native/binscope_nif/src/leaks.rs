//! NIFs of `Binscope.Leaks` (prefixed `leaks_`): term conversion around `binscope_core::leaks`,
//! on the calling node: the shortlist of a targeted scan, what a GC round gave back, the ranking
//! of a full scan, and the suggestions for the results.

use std::collections::HashSet;
use std::sync::Mutex;

use binscope_core::accounting::top::{top_by, Rows};
use binscope_core::accounting::{is_unresolved, store_entry, store_key, Snapshot};
use binscope_core::leaks::{
    full_ranking, likely_garbage, pinned_bytes, rank, suggest, waste, Candidate, Facts, Suggestion,
};
use rustler::{Binary, ListIterator, NifMap, NifResult, NifUnitEnum, Resource, ResourceArc, Term};

use crate::accounting::{
    badarg, batch_terms, bin_ref, share_fields, tuple_array, unpoisoned, SHARE_FIELDS,
};
use crate::collector::live_store_keys;

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
    let rows = Rows::new(&packed, SHARE_FIELDS.len()).ok_or_else(badarg)?;
    Ok(top_by(rows.len(), k as usize, |i| {
        (rows.field(i, 2), rows.field(i, 3))
    })
    .into_iter()
    .map(|i| i as u64)
    .collect())
}

/// A GC round's record `#binscope_gc{pid, binaries_before, binaries_after, reductions,
/// total_heap_size, stack_size, message_queue_len}` (include/binscope_collector.hrl; the Elixir
/// side checks that layout at compile time, `Binscope.Collector`): its binary lists (elements 2
/// and 3, the tag at 0) and heap plus stack words (elements 5 and 6).
fn push_round(item: Term, round: &mut Gathered) -> NifResult<()> {
    // Read in place: no `Vec` per record or reference.
    let [_, _, bins_before, bins_after, _, heap, stack, _] =
        tuple_array(item).ok_or_else(badarg)?;
    let words = heap.decode::<u64>()?.saturating_add(stack.decode()?);
    let mut unbounded = usize::MAX;
    round.push(bins_before, bins_after, words, &mut unbounded)
}

/// A process's figures in the order of `SHARE_FIELDS` (a list: rustler encodes tuples of up to 7).
type Share = Vec<u64>;

/// `{index, {refs, bytes, binaries}, retained, uss_before, unresolved_before}`: one row of
/// [`leaks_full_rank`] (`unresolved_before`: references listed before the collection that may be
/// store binaries but could not be identified).
type FullRow = (u64, (u64, u64, u64), Share, u64, u64);

/// The top `limit` of a full leak scan (`binscope_core::leaks::full_ranking`) from the GC
/// round's `results` (every collected process): `[{index, {refs, bytes, binaries}, retained,
/// uss_before, unresolved_before}]`, `retained` the process's figures after the collections in
/// the order of `SHARE_FIELDS`. `live_store_keys`: the store entries that survived.
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
    let mut round = Gathered::with_capacity(n);
    for item in results.into_list_iterator()? {
        push_round(item, &mut round)?;
    }
    Ok(full_rows(&round, live_store_keys, word_size, limit))
}

/// The rows of [`leaks_full_rank`] for a round gathered either way.
fn full_rows(
    round: &Gathered,
    live_store_keys: Vec<u64>,
    word_size: u64,
    limit: u64,
) -> Vec<FullRow> {
    let heap: Vec<u64> = round
        .heap
        .iter()
        .map(|w| w.saturating_mul(word_size))
        .collect();
    let live: HashSet<u64> = live_store_keys.into_iter().collect();
    let rows = full_ranking(
        &round.before,
        &round.after,
        &heap,
        |id| live.contains(&store_key(id)),
        limit as usize,
    );
    rows.into_iter()
        .map(|r| {
            let unresolved = round
                .before
                .process(r.index)
                .iter()
                .filter(|b| is_unresolved(b.key))
                .count();
            (
                r.index as u64,
                (r.reclaim.refs, r.reclaim.bytes, r.reclaim.binaries),
                share_fields(&r.retained).to_vec(),
                r.uss_before,
                unresolved as u64,
            )
        })
        .collect()
}

// --- GC rounds that keep no lists ----------------------------------------------------------
//
// A local full scan (`binscope_collector_gc` with `compact => true`, on the node that has this
// NIF) hands each window's binary lists to a `Round` as its collections complete, while they are
// still in the cache, and keeps a small record a process: the lists are garbage at once, no
// piece of the round carries them to the caller, and the ranking reads them from two flat
// snapshots instead of from a record a process scattered over the caller's heap (reading those
// back was over half of `leaks_full_rank` at 200k processes).

/// References a batch read on a normal scheduler may hold (`?BATCH_REFS` in
/// binscope_collector_gc); a batch with more goes to [`leaks_round_batch_dirty`].
pub const ROUND_BATCH_REFS: usize = 4096;

/// A round's binary lists before and after each collection, and each process's heap plus
/// stack words after it, one entry a process in push order.
struct Gathered {
    before: Snapshot,
    after: Snapshot,
    heap: Vec<u64>,
}

impl Gathered {
    /// Room for `n` processes and one reference each before and after: grown by doubling, the
    /// vectors were copied inside a batch, on a normal scheduler, into fresh pages.
    fn with_capacity(n: usize) -> Self {
        Gathered {
            before: Snapshot::with_capacity(n, n),
            after: Snapshot::with_capacity(n, n),
            heap: Vec::with_capacity(n),
        }
    }

    /// Adds one process: its lists before and after its collection and its heap plus stack
    /// words, taking each reference from `budget` (ArgumentError once it is spent). On an error
    /// the caller truncates what was added.
    fn push<'a>(
        &mut self,
        before: Term<'a>,
        after: Term<'a>,
        words: u64,
        budget: &mut usize,
    ) -> NifResult<()> {
        for (list, snap) in [(before, &mut self.before), (after, &mut self.after)] {
            for b in list.decode::<ListIterator>()? {
                *budget = budget.checked_sub(1).ok_or_else(badarg)?;
                snap.push_ref(bin_ref(b)?);
            }
            snap.end_process();
        }
        self.heap.push(words);
        Ok(())
    }

    fn truncate(&mut self, processes: usize) {
        self.before.truncate(processes);
        self.after.truncate(processes);
        self.heap.truncate(processes);
    }
}

/// A GC round's gathered lists (see above).
pub struct Round(Mutex<Gathered>);

#[rustler::resource_impl]
impl Resource for Round {}

/// A new, empty round with room for `processes` processes (at most the VM's process limit).
#[rustler::nif]
fn leaks_round_new(processes: u64) -> ResourceArc<Round> {
    // The VM's process limit is below 2^28.
    let n = processes.min(1 << 28) as usize;
    ResourceArc::new(Round(Mutex::new(Gathered::with_capacity(n))))
}

/// Adds a batch of processes to `round`, `[before, after, heap_words | ...]`, the newest first:
/// each process's binary lists before and after its collection (store binaries resolved, as in
/// a `#binscope_gc{}`) and its heap plus stack words after it, with at most
/// [`ROUND_BATCH_REFS`] references in all (it runs on a normal scheduler). A batch that is not
/// of this form raises ArgumentError and adds nothing.
#[rustler::nif]
fn leaks_round_batch(round: ResourceArc<Round>, batch: Term) -> NifResult<bool> {
    push_batch(&round, batch, Some(ROUND_BATCH_REFS))
}

/// [`leaks_round_batch`] for a batch of any size, on a dirty scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn leaks_round_batch_dirty(round: ResourceArc<Round>, batch: Term) -> NifResult<bool> {
    push_batch(&round, batch, None)
}

fn push_batch(round: &Round, batch: Term, max_refs: Option<usize>) -> NifResult<bool> {
    let terms = batch_terms(batch)?;
    let mut g = unpoisoned(&round.0);
    let before = g.heap.len();
    let mut budget = max_refs.unwrap_or(usize::MAX);
    let added = terms
        .chunks_exact(3)
        .rev()
        .try_for_each(|t| g.push(t[0], t[1], t[2].decode()?, &mut budget));
    if added.is_err() {
        g.truncate(before);
    }
    added.map(|()| true)
}

/// The store keys listed before the round's collections whose entries are still live.
#[rustler::nif(schedule = "DirtyCpu")]
fn leaks_round_live_store_keys(round: ResourceArc<Round>) -> Vec<u64> {
    let g = unpoisoned(&round.0);
    let mut keys: Vec<u64> = (0..g.before.processes())
        .flat_map(|i| g.before.process(i).iter().map(|b| b.key))
        .filter(|&k| store_entry(k).is_some())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    live_store_keys(keys)
}

/// [`leaks_full_rank`] of a round gathered by batches.
#[rustler::nif(schedule = "DirtyCpu")]
fn leaks_full_rank_round(
    round: ResourceArc<Round>,
    live_store_keys: Vec<u64>,
    word_size: u64,
    limit: u64,
) -> Vec<FullRow> {
    full_rows(&unpoisoned(&round.0), live_store_keys, word_size, limit)
}
