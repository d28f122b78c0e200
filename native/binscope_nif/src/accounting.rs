//! NIFs of `Binscope.Accounting` (prefixed `accounting_`): term conversion around
//! `binscope_core::accounting` and `binscope_core::leaks`.
//!
//! Store binaries reach the VM as resource binaries, which `process_info(pid, :binary)` lists under
//! the address of the resource's magic binary with its own small size (72 bytes here). The
//! collector calibrates the constant distance between that address and our resource object once
//! per node with [`accounting_probe`]; [`accounting_resolve`] then replaces such entries by the
//! store entry's key and real size. A scan reads [`accounting_mark`] before it lists anything, so
//! that an address reused by a newer entry meanwhile is never credited to the old holder: such a
//! binary becomes an unresolved key instead (see `binscope_core::accounting::handles`).

use std::collections::HashSet;

use binscope_core::accounting::{
    attribute, attribute_parallel, store_entry, store_key, unresolved_key, BinRef, Resolution,
    Snapshot,
};
use binscope_core::leaks::{
    likely_garbage, pinned_bytes, rank, reclaimed, suggest, waste, Candidate, Facts,
};
use rustler::{Env, NifMap, NifResult, Resource, ResourceArc, Term};

use crate::store::{StoreBinary, HANDLES, REGISTRY};

/// A resource of the same size and alignment as [`StoreBinary`], used only to calibrate.
pub struct Probe(#[allow(dead_code)] usize);

const _: () = assert!(std::mem::size_of::<Probe>() == std::mem::size_of::<StoreBinary>());
const _: () = assert!(std::mem::align_of::<Probe>() == std::mem::align_of::<StoreBinary>());

#[rustler::resource_impl]
impl Resource for Probe {}

/// One byte: the collector (`?PROBE_PAYLOAD`) tells a VM that lists resource binaries at their
/// payload size by a probe listed at this size.
static PROBE_BYTES: [u8; 1] = [0];

/// `{binary, resource_address}`: a resource binary whose resource address is known. The caller
/// (a fresh process holding nothing else) finds the binary's listed address and size.
#[rustler::nif]
fn accounting_probe(env: Env) -> (Term, u64) {
    let probe = ResourceArc::new(Probe(0));
    let addr = &*probe as *const Probe as u64;
    let bin = probe.make_binary(env, |_| &PROBE_BYTES[..]);
    (bin.to_term(env), addr)
}

type Bins = Vec<(u64, u64, u64)>;

/// From this many references on, attribution runs on several threads.
const PARALLEL_REFS: usize = 200_000;

/// The store's handle counter: a scan reads it before listing any process, and passes it to
/// [`accounting_resolve`].
#[rustler::nif]
fn accounting_mark() -> u64 {
    HANDLES.mark()
}

/// Rewrites every `{addr, size, refc}` whose `addr + offset` is a store resource that lived
/// through the whole listing (created before `mark`) and whose size is `magic_size` or the
/// entry's own size as `{store_key, real_size, refc}`; one that may be a store binary but cannot
/// be identified (its address reused or its resource released since `mark`) as
/// `{unresolved_key(addr), 0, refc}`. Dirty: one call covers a whole node.
#[rustler::nif(schedule = "DirtyCpu")]
fn accounting_resolve(lists: Vec<Bins>, offset: i64, magic_size: u64, mark: u64) -> Vec<Bins> {
    let patched = crate::gc_pressure::calibrated();
    lists
        .into_iter()
        .map(|bins| {
            bins.into_iter()
                .map(|(addr, size, refc)| {
                    let object = (addr as i64).wrapping_add(offset) as usize;
                    let resolution = if patched {
                        HANDLES.resolve_any_size(object, size, magic_size, mark)
                    } else {
                        HANDLES.resolve(object, size, magic_size, mark)
                    };
                    match resolution {
                        Resolution::Store { id, size } => (store_key(id), size, refc),
                        Resolution::Unresolved => (unresolved_key(addr), 0, refc),
                        Resolution::NotStore => (addr, size, refc),
                    }
                })
                .collect()
        })
        .collect()
}

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

#[derive(NifMap)]
#[rustler(encode)]
struct Summary {
    processes: u64,
    refs: u64,
    naive_bytes: u64,
    unique_binaries: u64,
    unique_bytes: u64,
    shared_binaries: u64,
    shared_bytes: u64,
    external_binaries: u64,
    /// Store bytes summed over the processes (as `native_store_bytes` in each record).
    store_bytes: u64,
    /// References that may be store binaries but could not be identified (address reused or
    /// resource released during the scan): in no byte figure.
    unresolved_store_binaries: u64,
}

/// A process's binary list: the list itself (`slot` nil), or a collector record, a tuple whose
/// element `slot` is the list (the caller reads the index from the records' one definition,
/// include/binscope_collector.hrl), so the caller need not build a list of lists first.
fn binaries<'a>(item: Term<'a>, slot: Option<usize>) -> NifResult<rustler::ListIterator<'a>> {
    match slot {
        Some(slot) => rustler::types::tuple::get_tuple(item)?
            .get(slot)
            .ok_or(rustler::Error::BadArg)?
            .decode(),
        None => item.decode(),
    }
}

/// `{key, size, holders, refc}` of one of the most shared binaries.
type SharedTuple = (u64, u64, u64, u64);

/// `OwnedBinary::new` aborts the VM when the allocation fails; this returns `None` instead.
fn try_owned_binary(size: usize) -> Option<rustler::OwnedBinary> {
    let mut raw = std::mem::MaybeUninit::<rustler::sys::ErlNifBinary>::uninit();
    // SAFETY: enif_alloc_binary initialises `raw` when it returns true, and the OwnedBinary
    // then owns (and on drop releases) that binary.
    unsafe {
        if rustler::sys::enif_alloc_binary(size, raw.as_mut_ptr()) == 0 {
            return None;
        }
        Some(rustler::OwnedBinary::from_raw(raw.assume_init()))
    }
}

/// The per-process figures [`accounting_attribute`] packs, in this order, each a native-endian
/// u64: one fixed-size record per process instead of a list of tuples, so a whole-node result
/// is one off-heap binary (no per-process term to build here or to garbage-collect in Elixir).
/// `bytes` (appended last) is the naive sum of the process's references with store binaries at
/// their real size: what its virtual binary heap counts for them.
pub const SHARE_FIELDS: [&str; 8] = [
    "refs",
    "distinct",
    "uss",
    "pss",
    "shared",
    "store_bytes",
    "unresolved",
    "bytes",
];

/// `{shares, summary, [{key, size, holders, refc}]}` for `lists` (one binary list, or one
/// collector record with its binary list at index `slot`, per process): `shares` packs
/// [`SHARE_FIELDS`] per process, in `lists` order.
#[rustler::nif(schedule = "DirtyCpu")]
fn accounting_attribute<'a>(
    env: Env<'a>,
    lists: rustler::ListIterator<'a>,
    slot: Option<usize>,
    top_shared: u64,
) -> NifResult<(Term<'a>, Summary, Vec<SharedTuple>)> {
    // Decoded straight into the flat snapshot: no vector per process.
    let mut snap = Snapshot::new();
    for item in lists {
        for b in binaries(item, slot)? {
            let (key, size, refc): (u64, u64, u64) = b.decode()?;
            snap.push_ref(BinRef { key, size, refc });
        }
        snap.end_process();
    }
    // Large nodes: split binaries among threads by key (identical result; criterion: 1M
    // references in 199 ms on one thread, 87 ms on two, on this project's 2-core machine).
    let a = if snap.total_refs() >= PARALLEL_REFS {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        attribute_parallel(&snap, top_shared as usize, threads)
    } else {
        attribute(&snap, top_shared as usize)
    };
    let width = SHARE_FIELDS.len() * 8;
    let mut shares = try_owned_binary(a.processes.len() * width).ok_or(rustler::Error::BadArg)?;
    for (p, out) in a
        .processes
        .iter()
        .zip(shares.as_mut_slice().chunks_exact_mut(width))
    {
        let fields = [
            p.refs,
            p.distinct,
            p.uss,
            p.pss,
            p.shared,
            p.store_bytes,
            p.unresolved,
            p.bytes,
        ];
        for (v, o) in fields.iter().zip(out.chunks_exact_mut(8)) {
            o.copy_from_slice(&v.to_ne_bytes());
        }
    }
    let s = a.summary;
    let summary = Summary {
        processes: s.processes,
        refs: s.refs,
        naive_bytes: s.naive_bytes,
        unique_binaries: s.unique_binaries,
        unique_bytes: s.unique_bytes,
        shared_binaries: s.shared_binaries,
        shared_bytes: s.shared_bytes,
        external_binaries: s.external_binaries,
        store_bytes: a.processes.iter().map(|p| p.store_bytes).sum(),
        unresolved_store_binaries: s.unresolved,
    };
    let top = a
        .top_shared
        .iter()
        .map(|b| (b.key, b.size, b.holders, b.refc))
        .collect();
    Ok((shares.release(env).to_term(env), summary, top))
}

/// The store entries among `keys` that are still live on this node (the collector asks after
/// forcing collections, on the node that owns the store).
#[rustler::nif(schedule = "DirtyCpu")]
fn accounting_live_store_keys(keys: Vec<u64>) -> Vec<u64> {
    let ids: Vec<u64> = keys.iter().filter_map(|&k| store_entry(k)).collect();
    ids.iter()
        .zip(REGISTRY.contains_ids(&ids))
        .filter_map(|(&id, live)| live.then_some(store_key(id)))
        .collect()
}

/// `[{refs, bytes, binaries}]`: what forced collections gave back, per process (same order as
/// `before` and `after`). `live_store_keys` are the store entries that survived.
#[rustler::nif(schedule = "DirtyCpu")]
fn accounting_reclaimed(
    before: Vec<Bins>,
    after: Vec<Bins>,
    live_store_keys: Vec<u64>,
) -> NifResult<Vec<(u64, u64, u64)>> {
    if before.len() != after.len() {
        return Err(rustler::Error::BadArg);
    }
    let (before, after) = (snapshot(&before), snapshot(&after));
    let live: HashSet<u64> = live_store_keys.into_iter().collect();
    Ok(
        reclaimed(&before, &after, |id| live.contains(&store_key(id)))
            .into_iter()
            .map(|r| (r.refs, r.bytes, r.binaries))
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

/// `{suggestion_name, reason}` for one process's figures.
#[rustler::nif]
fn accounting_suggest(facts: FactsMap) -> (String, String, u64, u64) {
    let f = Facts {
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
    };
    let (s, reason) = suggest(&f);
    (s.name().to_string(), reason, pinned_bytes(&f), waste(&f))
}

/// `[{index, likely_garbage_bytes}]`, most likely garbage first, for candidates given as
/// `{uss, vheap_bytes, old_vheap_bytes, reductions_delta, message_queue_len}`. Dirty: the
/// shortlist grows with the `candidates:` option.
#[rustler::nif(schedule = "DirtyCpu")]
fn accounting_rank(candidates: Vec<(u64, u64, u64, u64, u64)>) -> Vec<(u64, u64)> {
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
