//! NIFs of `Binscope.Accounting` (prefixed `accounting_`): term conversion around
//! `binscope_core::accounting`, on the calling node (the collector's records come from any node).

use std::sync::{Mutex, MutexGuard};

use binscope_core::accounting::top::{top_by, Rows};
use binscope_core::accounting::{
    attribute_each, attribute_parallel, Attribution, BinRef, ProcessShare, Snapshot,
};
use rustler::{Binary, Env, NifMap, NifResult, Resource, ResourceArc, Term};

use crate::collector::ResolveWith;

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

/// `ok_or_else(badarg)` on the scan's per-reference paths: `ok_or(BadArg)` made the error first
/// and dropped it (an out-of-line call) on every success.
pub(crate) fn badarg() -> rustler::Error {
    rustler::Error::BadArg
}

/// The `N` elements of `term` when it is a tuple of arity `N`, read in place (the per-reference
/// and per-process reads of a scan batch: no `Vec`, and no `rustler::Error` made and dropped for
/// a term that is not a tuple).
#[inline]
pub(crate) fn tuple_array<'a, const N: usize>(term: Term<'a>) -> Option<[Term<'a>; N]> {
    let mut e = tuple_elements(term).ok()?;
    if e.len() != N {
        return None;
    }
    Some(std::array::from_fn(|_| e.next().expect("arity checked")))
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

/// Attribution of `snap` with every process's figures packed into one binary (as [`packed`]
/// lays rows out, [`SHARE_FIELDS`] a row): `{shares, attribution}`, the attribution without
/// its per-process figures. Below [`PARALLEL_REFS`] references on this (dirty) scheduler's
/// thread, each figure written straight into the binary; from there on on several threads
/// (binaries split among them by key), whose figures are then copied in. At 1M processes with
/// one binary each, in the VM, a fresh scan before each call, 6 and 7 calls interleaved (the
/// first, cold, left out): one thread 105-222 ms (median 179), two 127-234 ms (median 149):
/// the two threads take their page faults side by side. With the key index a `HashMap` (two
/// threads): 255-329 ms.
fn attribute_packed<'a>(
    env: Env<'a>,
    snap: &Snapshot,
    top_shared: usize,
) -> NifResult<(Term<'a>, Attribution)> {
    let width = SHARE_FIELDS.len() * 8;
    let mut out = try_owned_binary(snap.processes() * width).ok_or(rustler::Error::BadArg)?;
    let mut rows = out.as_mut_slice().chunks_exact_mut(width);
    let mut put = |p: &ProcessShare| {
        if let Some(row) = rows.next() {
            for (v, o) in share_fields(p).iter().zip(row.chunks_exact_mut(8)) {
                o.copy_from_slice(&v.to_ne_bytes());
            }
        }
    };
    let a = if snap.total_refs() >= PARALLEL_REFS {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let a = attribute_parallel(snap, top_shared, threads);
        a.processes.iter().for_each(&mut put);
        a
    } else {
        attribute_each(snap, top_shared, |p| put(&p))
    };
    Ok((out.release(env).to_term(env), a))
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
    let (shares, a) = attribute_packed(env, &snap, top_shared as usize)?;
    let (summary, top) = summary_and_top(&a);
    Ok((shares, summary, top))
}

// Selections of a whole node's records (`binscope_core::accounting::top`): they return the
// indexes of the few reported, so that Elixir builds records for those only. Equal figures rank
// the larger pid first (term order, as `Binscope.Accounting.top/3` ranks). Both are dirty: one
// call covers a whole node.

/// The pids of a scan in order, from `chunks`: a list of lists whose items are pids or records
/// (tuples with the pid at element 1).
fn scan_pids<'a>(chunks: Term<'a>) -> NifResult<Vec<Term<'a>>> {
    let mut pids = Vec::new();
    for chunk in chunks.into_list_iterator()? {
        pids.reserve(chunk.list_length()?);
        for item in chunk.into_list_iterator()? {
            let pid = if item.is_pid() {
                item
            } else {
                tuple_elements(item)?.nth(1).ok_or_else(badarg)?
            };
            if !pid.is_pid() {
                return Err(badarg());
            }
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Indexes of the `k` rows of `packed` (rows of `width` native-endian u64s: the `shares` or the
/// `extra` of an attribution) with the largest field `field`, largest first; `pids` (see
/// `scan_pids`) has the rows' pids, for ties.
#[rustler::nif(schedule = "DirtyCpu")]
fn accounting_top_packed<'a>(
    packed: Binary<'a>,
    width: u64,
    field: u64,
    pids: Term<'a>,
    k: u64,
) -> NifResult<Vec<u64>> {
    let rows = Rows::new(&packed, width as usize).ok_or_else(badarg)?;
    let pids = scan_pids(pids)?;
    if field >= width || pids.len() != rows.len() {
        return Err(badarg());
    }
    let top = top_by(rows.len(), k as usize, |i| {
        (rows.field(i, field as usize), pids[i])
    });
    Ok(top.into_iter().map(|i| i as u64).collect())
}

/// Indexes of the `k` of `records` (collector records: tuples, the pid at element 1) with the
/// largest element at `slot` (0-based, the tag at 0), ordered as `accounting_top_packed`'s;
/// `undefined` there (a figure the VM did not give) ranks below every integer.
#[rustler::nif(schedule = "DirtyCpu")]
fn accounting_top_records(records: Term, slot: u64, k: u64) -> NifResult<Vec<u64>> {
    let undefined = rustler::types::atom::undefined().to_term(records.get_env());
    let mut keys: Vec<(Option<u64>, Term)> = Vec::with_capacity(records.list_length()?);
    for record in records.into_list_iterator()? {
        let mut elements = tuple_elements(record)?;
        let pid = elements.nth(1).filter(|p| p.is_pid()).ok_or_else(badarg)?;
        let value = match slot.checked_sub(2) {
            Some(skip) => elements.nth(skip as usize),
            None => None,
        }
        .ok_or_else(badarg)?;
        let figure = match value.decode::<u64>() {
            Ok(v) => Some(v),
            Err(_) if value == undefined => None,
            Err(_) => return Err(badarg()),
        };
        keys.push((figure, pid));
    }
    let top = top_by(keys.len(), k as usize, |i| keys[i]);
    Ok(top.into_iter().map(|i| i as u64).collect())
}

/// One binary of native-endian u64s: each row's fields in order, rows in order. A binary (not
/// terms) so that a whole node's figures are one off-heap object.
fn packed<'a, const N: usize>(
    env: Env<'a>,
    rows: impl ExactSizeIterator<Item = [u64; N]>,
) -> NifResult<Term<'a>> {
    let width = N * 8;
    let mut out = try_owned_binary(rows.len() * width).ok_or(rustler::Error::BadArg)?;
    for (row, chunk) in rows.zip(out.as_mut_slice().chunks_exact_mut(width)) {
        for (v, o) in row.iter().zip(chunk.chunks_exact_mut(8)) {
            o.copy_from_slice(&v.to_ne_bytes());
        }
    }
    Ok(out.release(env).to_term(env))
}

fn summary_and_top(a: &Attribution) -> (Summary, Vec<SharedTuple>) {
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
        store_bytes: s.store_bytes,
        unresolved_store_binaries: s.unresolved,
    };
    let top = a
        .top_shared
        .iter()
        .map(|b| (b.key, b.size, b.holders, b.refc))
        .collect();
    (summary, top)
}

// --- Scans that keep no reply --------------------------------------------------------------
//
// A local scan (`binscope_collector_compact`, on the node that has this NIF) hands the figures
// of its `process_info/2` replies to a `Scan` a batch at a time, while they are in the cache,
// and keeps only the pids: the replies are garbage at once, as in a plain sweep, so the scanning
// process's collections copy almost nothing and free the replies' heap fragments as they go
// (kept, they were freed by one collection at the end that also copied the whole result), and
// attribution reads the references from one flat vector instead of 50k lists scattered over as
// many fragments.

/// References of one process's list a batch may hold (`?LIST_REFS` in the collector): a batch
/// is read on a normal scheduler. A longer list stays with the scan, which hands it to the
/// (dirty) attribution as a pending list.
pub const PUSH_REFS: usize = 4096;

/// What a scan gathered, one entry per process, in push order.
struct Collected {
    /// How the lists the caller marks as possible store holders are resolved (`None`: the
    /// node's calibration failed, and the caller marks none).
    resolve: Option<ResolveWith>,
    /// The references of every process; a pending one's list comes to the attribution.
    snap: Snapshot,
    memory: Vec<u64>,
    listed: Vec<u64>,
    reductions: Vec<u64>,
    pending: Vec<bool>,
}

/// A scan's gathered figures (see above).
pub struct Scan(Mutex<Collected>);

#[rustler::resource_impl]
impl Resource for Scan {}

impl Scan {
    fn lock(&self) -> MutexGuard<'_, Collected> {
        unpoisoned(&self.0)
    }
}

/// The data behind a lock that a panic poisoned, as it was: the NIFs that gather into a resource
/// (scan and GC-round batches) change nothing until a batch was read whole, so the data is as
/// complete batches left it.
pub(crate) fn unpoisoned<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

impl Collected {
    /// Keeps the first `processes` processes.
    fn truncate(&mut self, processes: usize) {
        self.snap.truncate(processes);
        self.memory.truncate(processes);
        self.listed.truncate(processes);
        self.reductions.truncate(processes);
        self.pending.truncate(processes);
    }

    fn add(&mut self, memory: u64, reductions: u64, listed: u64, pending: bool) {
        self.snap.end_process();
        self.memory.push(memory);
        self.listed.push(listed);
        self.reductions.push(reductions);
        self.pending.push(pending);
    }
}

/// References per process a scan's room is reserved for (see [`accounting_scan_new`]).
const REFS_PER_PROCESS: usize = 2;

/// A new, empty scan; `resolve` is `{offset, magic_size, mark}` (the store calibration and the
/// mark read before the first process was listed), or nil when store binaries are not
/// resolved. Room is reserved for `processes` processes (the node's process count; at most
/// the VM's process limit) and [`REFS_PER_PROCESS`] references each: grown by doubling, the
/// vectors were reallocated inside a batch, on a normal scheduler, and at a million processes
/// one such copy (with the page faults of its new block) held the scheduler 27-72 ms. The room
/// is address space until used; a scan that outgrows it grows the usual way.
#[rustler::nif]
fn accounting_scan_new(resolve: Option<(i64, u64, u64)>, processes: u64) -> ResourceArc<Scan> {
    let resolve = resolve.map(|(offset, magic_size, mark)| ResolveWith {
        offset,
        magic_size,
        mark,
        patched: crate::gc_pressure::calibrated(),
    });
    // The VM's process limit is below 2^28.
    let n = processes.min(1 << 28) as usize;
    ResourceArc::new(Scan(Mutex::new(Collected {
        resolve,
        snap: Snapshot::with_capacity(n, n * REFS_PER_PROCESS),
        memory: Vec::with_capacity(n),
        listed: Vec::with_capacity(n),
        reductions: Vec::with_capacity(n),
        pending: Vec::with_capacity(n),
    })))
}

/// `{key, size, refc}`, read in place.
#[inline]
pub(crate) fn bin_ref(t: Term) -> NifResult<BinRef> {
    let [key, size, refc] = tuple_array(t).ok_or_else(badarg)?;
    Ok(BinRef {
        key: key.decode()?,
        size: size.decode()?,
        refc: refc.decode()?,
    })
}

/// Adds a batch of processes to `scan`, `[bins_or_listed, memory, reductions | ...]`, the newest
/// first: `bins_or_listed` is a process's `process_info(pid, binary)` list (at most
/// [`PUSH_REFS`] references), `{list}` for such a list that may hold store binaries (resolved
/// as `collector_resolve` does, with the scan's calibration and mark), or, for a process whose
/// list the attribution gets (a longer list), its listed bytes. The caller bounds a batch (a few hundred
/// processes, a few thousand references: it runs on a normal scheduler). A batch that is not
/// of this form raises ArgumentError and adds nothing.
#[rustler::nif]
fn accounting_scan_batch(scan: ResourceArc<Scan>, batch: Term) -> NifResult<bool> {
    let terms = batch_terms(batch)?;
    let mut c = scan.lock();
    let before = c.memory.len();
    let added = terms
        .chunks_exact(3)
        .rev()
        .try_for_each(|t| add_process(&mut c, t[0], t[1], t[2]));
    if added.is_err() {
        c.truncate(before);
    }
    added.map(|()| true)
}

/// The terms of a batch of processes, three a process, newest first (the scan's and the GC
/// round's batches): ArgumentError unless their number is a multiple of three.
pub(crate) fn batch_terms(batch: Term) -> NifResult<Vec<Term>> {
    // Sized first: collected the usual way, the vector grew by doubling in every batch.
    let mut terms: Vec<Term> = Vec::with_capacity(batch.list_length()?);
    terms.extend(batch.into_list_iterator()?);
    if terms.len().is_multiple_of(3) {
        Ok(terms)
    } else {
        Err(badarg())
    }
}

/// One process of a batch (see [`accounting_scan_batch`]); on an error the caller drops what
/// was added.
fn add_process(c: &mut Collected, bins: Term, memory: Term, reductions: Term) -> NifResult<()> {
    // `{bins}`: a list that may hold store binaries, resolved here (the caller's mark was read
    // before the process was listed, and the list was read since).
    let (list, resolve) = if bins.is_tuple() {
        match (tuple_array(bins), c.resolve) {
            (Some([list]), Some(how)) => (list, Some(how)),
            _ => return Err(rustler::Error::BadArg),
        }
    } else {
        (bins, None)
    };
    let (listed, pending) = if list.is_list() {
        let mut listed = 0u64;
        for (n, b) in list.into_list_iterator()?.enumerate() {
            if n == PUSH_REFS {
                return Err(rustler::Error::BadArg);
            }
            let r = bin_ref(b)?;
            listed = listed.checked_add(r.size).ok_or_else(badarg)?;
            c.snap.push_ref(match resolve {
                Some(how) => {
                    let (key, size, refc) = how.resolve(r.key, r.size, r.refc);
                    BinRef { key, size, refc }
                }
                None => r,
            });
        }
        (listed, false)
    } else if resolve.is_none() {
        (list.decode::<u64>()?, true)
    } else {
        return Err(rustler::Error::BadArg);
    };
    c.add(memory.decode()?, reductions.decode()?, listed, pending);
    Ok(())
}

/// `{shares, extra, summary, top}` for `scans`, `[{scan, pending}]` in order (the processes of
/// the first scan, then the next's...), `pending` the `[{index, bins}]` (0-based, ascending) of
/// that scan's pending processes, every one of them and no other. `shares` and `summary` are as
/// [`accounting_attribute`]'s; `extra` packs each process's memory, listed bytes and
/// reductions (u64 each, native-endian), in the same order.
#[rustler::nif(schedule = "DirtyCpu")]
fn accounting_attribute_scans<'a>(
    env: Env<'a>,
    scans: Vec<(ResourceArc<Scan>, Term<'a>)>,
    top_shared: u64,
) -> NifResult<(Term<'a>, Term<'a>, Summary, Vec<SharedTuple>)> {
    let guards: Vec<_> = scans.iter().map(|(s, _)| s.lock()).collect();
    let joined;
    let snap = match guards.as_slice() {
        [one] if !one.pending.contains(&true) => {
            if !scans[0].1.is_empty_list() {
                return Err(rustler::Error::BadArg);
            }
            &one.snap
        }
        _ => {
            joined = join(&guards, &scans)?;
            &joined
        }
    };
    let (shares, a) = attribute_packed(env, snap, top_shared as usize)?;
    let rows = guards.iter().map(|g| g.memory.len()).sum::<usize>();
    let extra = packed(
        env,
        Counted(
            guards.iter().flat_map(|g| {
                (0..g.memory.len()).map(move |i| [g.memory[i], g.listed[i], g.reductions[i]])
            }),
            rows,
        ),
    )?;
    let (summary, top) = summary_and_top(&a);
    Ok((shares, extra, summary, top))
}

/// One snapshot of every scan's processes in order, each pending process's references read
/// from its list in `scans`.
fn join(
    guards: &[MutexGuard<'_, Collected>],
    scans: &[(ResourceArc<Scan>, Term)],
) -> NifResult<Snapshot> {
    let processes = guards.iter().map(|g| g.memory.len()).sum();
    let refs = guards.iter().map(|g| g.snap.total_refs()).sum::<usize>();
    let mut out = Snapshot::with_capacity(processes, refs);
    for (g, (_, pending)) in guards.iter().zip(scans) {
        let mut pending = pending.into_list_iterator()?;
        for i in 0..g.memory.len() {
            if g.pending[i] {
                let item = pending.next().ok_or(rustler::Error::BadArg)?;
                let mut e = tuple_elements(item)?;
                if e.len() != 2
                    || e.next().ok_or(rustler::Error::BadArg)?.decode::<u64>()? != i as u64
                {
                    return Err(rustler::Error::BadArg);
                }
                for b in e
                    .next()
                    .ok_or(rustler::Error::BadArg)?
                    .into_list_iterator()?
                {
                    out.push_ref(bin_ref(b)?);
                }
            } else {
                for &r in g.snap.process(i) {
                    out.push_ref(r);
                }
            }
            out.end_process();
        }
        if pending.next().is_some() {
            return Err(rustler::Error::BadArg);
        }
    }
    Ok(out)
}

/// An iterator with its length known.
struct Counted<I>(I, usize);

impl<I: Iterator> Iterator for Counted<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let v = self.0.next()?;
        self.1 -= 1;
        Some(v)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.1, Some(self.1))
    }
}

impl<I: Iterator> ExactSizeIterator for Counted<I> {}
