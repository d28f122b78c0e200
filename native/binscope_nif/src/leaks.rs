//! NIFs of `Binscope.Leaks` (prefixed `leaks_`): term conversion around `binscope_core::leaks`,
//! on the calling node: what a GC round gave back, the ranking of a shortlist and the suggestion
//! for one process.

use std::collections::HashSet;

use binscope_core::accounting::{store_key, BinRef, Snapshot};
use binscope_core::leaks::{
    likely_garbage, pinned_bytes, rank, reclaimed, suggest, waste, Candidate, Facts, Suggestion,
};
use rustler::{NifMap, NifResult, NifUnitEnum};

use crate::accounting::attribute_snapshot;

type Bins = Vec<(u64, u64, u64)>;

fn snapshot(lists: &[Bins]) -> Snapshot {
    let refs = lists.iter().map(Vec::len).sum();
    let mut snap = Snapshot::with_capacity(lists.len(), refs);
    for bins in lists {
        snap.push_process(
            bins.iter()
                .map(|&(key, size, refc)| BinRef { key, size, refc }),
        );
    }
    snap
}

/// `{refs, bytes, binaries, retained_binaries, retained_bytes}` of one process.
type Reclaimed = (u64, u64, u64, u64, u64);

/// `[{refs, bytes, binaries, retained_binaries, retained_bytes}]` per process (same order as
/// `before` and `after`): what forced collections gave back (`live_store_keys` are the store
/// entries that survived), and what each process still holds after its collection, attributed
/// among the processes of `after` (distinct binaries and their fair share, PSS). One call for
/// both: the lists are decoded once.
#[rustler::nif(schedule = "DirtyCpu")]
fn leaks_reclaimed(
    before: Vec<Bins>,
    after: Vec<Bins>,
    live_store_keys: Vec<u64>,
) -> NifResult<Vec<Reclaimed>> {
    if before.len() != after.len() {
        return Err(rustler::Error::BadArg);
    }
    let (before, after) = (snapshot(&before), snapshot(&after));
    let live: HashSet<u64> = live_store_keys.into_iter().collect();
    let retained = attribute_snapshot(&after, 0);
    Ok(
        reclaimed(&before, &after, |id| live.contains(&store_key(id)))
            .into_iter()
            .zip(retained.processes)
            .map(|(r, p)| (r.refs, r.bytes, r.binaries, p.distinct, p.pss))
            .collect(),
    )
}

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

/// `[waste_bytes]` (what [`leaks_suggest`] reports as waste) for processes given as
/// `{reclaimed_bytes, retained_binary_bytes, heap_bytes}`, the only figures it depends on: the
/// ranking of a whole GC round in one call, without a reason per process. Dirty: a full scan
/// ranks every process.
#[rustler::nif(schedule = "DirtyCpu")]
fn leaks_waste(figures: Vec<(u64, u64, u64)>) -> Vec<u64> {
    figures
        .into_iter()
        .map(|(reclaimed_bytes, retained_binary_bytes, heap_bytes)| {
            waste(&Facts {
                reclaimed_bytes,
                retained_binary_bytes,
                heap_bytes,
                ..Facts::default()
            })
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
