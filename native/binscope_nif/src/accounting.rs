//! NIFs of `Binscope.Accounting` (prefixed `accounting_`): term conversion around
//! `binscope_core::accounting`, on the calling node (the collector's records come from any node).

use binscope_core::accounting::{
    attribute, attribute_parallel, Attribution, BinRef, ProcessShare, Snapshot,
};
use rustler::{Env, NifMap, NifResult, Term};

/// From this many references on, attribution runs on several threads.
const PARALLEL_REFS: usize = 200_000;

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

/// The elements of `term`, a tuple, read in place: `rustler::types::tuple::get_tuple` copies
/// them into a new `Vec` (one allocation per record, 50k of them in a snapshot of 50k processes).
pub(crate) fn tuple_elements<'a>(
    term: Term<'a>,
) -> NifResult<impl ExactSizeIterator<Item = Term<'a>>> {
    let env = term.get_env();
    let mut arity: rustler::sys::c_int = 0;
    let mut array: *const rustler::sys::ErlNifTerm = std::ptr::null();
    // SAFETY: enif_get_tuple sets `array` to the tuple's `arity` elements when it returns true;
    // they live as long as the term (the env of this NIF call), which bounds the slice.
    let elements = unsafe {
        if rustler::sys::enif_get_tuple(env.as_c_arg(), term.as_c_arg(), &mut arity, &mut array)
            == 0
        {
            return Err(rustler::Error::BadArg);
        }
        std::slice::from_raw_parts(array, arity as usize)
    };
    // SAFETY: each element is a term of `env`.
    Ok(elements.iter().map(move |&t| unsafe { Term::new(env, t) }))
}

/// A process's binary list: the list itself (`slot` nil), or a collector record, a tuple whose
/// element `slot` is the list (the caller reads the index from the records' one definition,
/// include/binscope_collector.hrl), so the caller need not build a list of lists first.
fn binaries<'a>(item: Term<'a>, slot: Option<usize>) -> NifResult<rustler::ListIterator<'a>> {
    match slot {
        Some(slot) => tuple_elements(item)?
            .nth(slot)
            .ok_or(rustler::Error::BadArg)?
            .decode(),
        None => item.decode(),
    }
}

/// Attribution of `snap`, on several threads for large nodes: binaries split among threads by
/// key (identical result; criterion: 1M references in 199 ms on one thread, 87 ms on two, on
/// this project's 2-core machine).
fn attribute_snapshot(snap: &Snapshot, top_shared: usize) -> Attribution {
    if snap.total_refs() >= PARALLEL_REFS {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        attribute_parallel(snap, top_shared, threads)
    } else {
        attribute(snap, top_shared)
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

/// A process's figures in the order of [`SHARE_FIELDS`].
pub(crate) fn share_fields(p: &ProcessShare) -> [u64; SHARE_FIELDS.len()] {
    [
        p.refs,
        p.distinct,
        p.uss,
        p.pss,
        p.shared,
        p.store_bytes,
        p.unresolved,
        p.bytes,
    ]
}

/// `{shares, summary, [{key, size, holders, refc}]}` for `lists` (one binary list, or one
/// collector record with its binary list at index `slot`, per process): `shares` packs
/// [`SHARE_FIELDS`] per process, in `lists` order.
#[rustler::nif(schedule = "DirtyCpu")]
fn accounting_attribute<'a>(
    env: Env<'a>,
    lists: Term<'a>,
    slot: Option<usize>,
    top_shared: u64,
) -> NifResult<(Term<'a>, Summary, Vec<SharedTuple>)> {
    // Decoded straight into the flat snapshot: no vector per process. Sized for one reference
    // a process (most hold none or one), so a whole node's does not grow through copies.
    let n = lists.list_length()?;
    let mut snap = Snapshot::with_capacity(n, n);
    for item in lists.into_list_iterator()? {
        for b in binaries(item, slot)? {
            let (key, size, refc): (u64, u64, u64) = b.decode()?;
            snap.push_ref(BinRef { key, size, refc });
        }
        snap.end_process();
    }
    let a = attribute_snapshot(&snap, top_shared as usize);
    let width = SHARE_FIELDS.len() * 8;
    let mut shares = try_owned_binary(a.processes.len() * width).ok_or(rustler::Error::BadArg)?;
    for (p, out) in a
        .processes
        .iter()
        .zip(shares.as_mut_slice().chunks_exact_mut(width))
    {
        for (v, o) in share_fields(p).iter().zip(out.chunks_exact_mut(8)) {
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
