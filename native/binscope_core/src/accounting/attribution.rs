//! Attribution of shared binaries to the processes that hold them.
//!
//! A refc binary shared by K processes appears in each one's `process_info(pid, :binary)` list, so
//! summing those lists (what recon and observer_cli show) counts it K times. Here every binary is
//! identified by its key and counted once:
//! - `bytes` (naive): the sum of the process's list, duplicates included, as other tools report;
//! - `uss`: bytes of binaries that no other process and nothing else (ETS, ports, NIFs) references;
//! - `pss`: each binary's size split among its holder processes, in whole bytes, so that the sum of
//!   `pss` over all processes equals the node's unique binary bytes exactly.
//!
//! Cost: two passes over the references, the first with one lookup each in a prefetched key
//! index ([`super::key_index`]; criterion: `attribution`).

use std::hash::Hasher;

use super::key_index::{KeyIndex, PREFETCH_AHEAD};

/// One reference to a binary as a process holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinRef {
    /// The binary's identity: its address, or a store key (see [`super::store_key`]).
    pub key: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The VM's reference count for it when read (every holder: processes, ETS, ports, NIFs).
    pub refc: u64,
}

/// Every process's binary references, flattened: process `i` holds `refs[bounds[i]..bounds[i+1]]`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    refs: Vec<BinRef>,
    bounds: Vec<usize>,
}

impl Snapshot {
    pub fn new() -> Self {
        Snapshot {
            refs: Vec::new(),
            bounds: vec![0],
        }
    }

    pub fn with_capacity(processes: usize, refs: usize) -> Self {
        let mut bounds = Vec::with_capacity(processes + 1);
        bounds.push(0);
        Snapshot {
            refs: Vec::with_capacity(refs),
            bounds,
        }
    }

    /// Adds one process's references.
    pub fn push_process<I: IntoIterator<Item = BinRef>>(&mut self, refs: I) {
        self.refs.extend(refs);
        self.bounds.push(self.refs.len());
    }

    /// Adds one reference to the process being built (finish it with [`Snapshot::end_process`]).
    pub fn push_ref(&mut self, r: BinRef) {
        self.refs.push(r);
    }

    /// Closes the process whose references were pushed with [`Snapshot::push_ref`].
    pub fn end_process(&mut self) {
        self.bounds.push(self.refs.len());
    }

    /// Keeps the first `processes` processes (if it has more) and drops every reference pushed
    /// after them, closed or not: the snapshot is as it was when it held them.
    pub fn truncate(&mut self, processes: usize) {
        self.bounds.truncate(processes + 1);
        let end = self.bounds.last().copied().unwrap_or(0);
        self.refs.truncate(end);
    }

    pub fn processes(&self) -> usize {
        self.bounds.len() - 1
    }

    pub fn process(&self, i: usize) -> &[BinRef] {
        &self.refs[self.bounds[i]..self.bounds[i + 1]]
    }

    pub fn total_refs(&self) -> usize {
        self.refs.len()
    }
}

/// One process's share of the node's binaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessShare {
    /// References held (list length, duplicates included).
    pub refs: u64,
    /// Naive bytes: the sum of the list, as other tools report.
    pub bytes: u64,
    /// Distinct binaries held.
    pub distinct: u64,
    /// Bytes only this process references.
    pub uss: u64,
    /// This process's fair share of every binary it holds.
    pub pss: u64,
    /// Distinct binaries this process shares with other processes.
    pub shared: u64,
    /// Bytes of distinct store entries it holds (their real size, not the VM's 72).
    pub store_bytes: u64,
    /// References to binaries that may be store binaries but could not be identified
    /// ([`super::is_unresolved`] keys): left out of every other field.
    pub unresolved: u64,
}

impl ProcessShare {
    /// Adds one distinct binary this process holds: the one rule of the distinct, store, USS,
    /// shared and PSS figures, which the leak finder's ranking applies too. `served` is how many
    /// of its `holders` were given their share before this one (the first `size % holders` get
    /// one byte more, so the shares add up to `size`).
    #[inline]
    pub(crate) fn add_distinct(
        &mut self,
        size: u64,
        refc: u64,
        holders: u32,
        refs_seen: u32,
        served: u32,
        store: bool,
    ) {
        self.distinct += 1;
        if store {
            self.store_bytes += size;
        }
        if exclusive(holders, refc, refs_seen) {
            self.uss += size;
        }
        let holders = u64::from(holders);
        if holders > 1 {
            self.shared += 1;
        }
        let extra = u64::from(u64::from(served) < size % holders);
        self.pss += size / holders + extra;
    }

    /// Adds what another shard counted for the same process. Every field is named, so a new
    /// field cannot be left out of the sum.
    pub(crate) fn merge(&mut self, other: &ProcessShare) {
        let ProcessShare {
            refs,
            bytes,
            distinct,
            uss,
            pss,
            shared,
            store_bytes,
            unresolved,
        } = *other;
        self.refs += refs;
        self.bytes += bytes;
        self.distinct += distinct;
        self.uss += uss;
        self.pss += pss;
        self.shared += shared;
        self.store_bytes += store_bytes;
        self.unresolved += unresolved;
    }
}

/// Whether a binary counts in its holder's USS: one process holds it and every reference the
/// VM counts (`refc`) is one the scan saw, so nothing outside the processes (ETS, a message in
/// flight, the store) holds it too.
#[inline]
pub(crate) fn exclusive(holders: u32, refc: u64, refs_seen: u32) -> bool {
    holders == 1 && refc <= u64::from(refs_seen)
}

/// A binary held by more than one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedBinary {
    pub key: u64,
    pub size: u64,
    /// Processes holding it.
    pub holders: u64,
    /// The VM's reference count (larger than the references seen when ETS, ports or NIFs hold it).
    pub refc: u64,
}

/// Node-wide totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub processes: u64,
    pub refs: u64,
    /// What summing every process's list gives (each shared binary counted once per holder).
    pub naive_bytes: u64,
    /// Distinct binaries and their bytes: each counted once. Equals the sum of every `pss`.
    pub unique_binaries: u64,
    pub unique_bytes: u64,
    /// Binaries held by two or more processes, and their bytes (counted once).
    pub shared_binaries: u64,
    pub shared_bytes: u64,
    /// Binaries whose reference count shows holders outside the scanned processes.
    pub external_binaries: u64,
    /// Unresolved references over all processes (the sum of every `unresolved`).
    pub unresolved: u64,
    /// The sum of every process's `store_bytes` (an entry two processes hold counts twice).
    pub store_bytes: u64,
}

impl Summary {
    /// Adds another shard's totals (every field named, as in [`ProcessShare::merge`]).
    fn merge(&mut self, other: &Summary) {
        let Summary {
            processes,
            refs,
            naive_bytes,
            unique_binaries,
            unique_bytes,
            shared_binaries,
            shared_bytes,
            external_binaries,
            unresolved,
            store_bytes,
        } = *other;
        self.processes += processes;
        self.refs += refs;
        self.naive_bytes += naive_bytes;
        self.unique_binaries += unique_binaries;
        self.unique_bytes += unique_bytes;
        self.shared_binaries += shared_binaries;
        self.shared_bytes += shared_bytes;
        self.external_binaries += external_binaries;
        self.unresolved += unresolved;
        self.store_bytes += store_bytes;
    }
}

/// The result of [`attribute`].
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    /// One per process, in snapshot order.
    pub processes: Vec<ProcessShare>,
    pub summary: Summary,
    /// The most widely shared binaries, largest `size * holders` first (at most `top_shared`).
    pub top_shared: Vec<SharedBinary>,
}

/// Per-binary facts gathered in the first pass.
#[derive(Clone, Copy)]
struct Slot {
    key: u64,
    size: u64,
    /// The largest reference count any listing showed.
    refc: u64,
    /// Processes holding it, and references seen over all processes.
    holders: u32,
    seen_refs: u32,
    /// The last process that touched the slot: `1 + index` in pass 1, `1 + n + index` in pass 2
    /// (0 = none), so one field serves both passes.
    last: u32,
    /// Holders already given their share (the first `size % holders` get one byte more).
    served: u32,
}

/// Keys of one shard (all keys when `shards` is 1), as dense slots in first-seen order, and
/// each reference's slot (`SKIP` for other shards' keys and unresolved ones), so pass 2 walks
/// references in order without looking them up again. The lookups are the cost at 1M
/// references: each key's probe is prefetched [`PREFETCH_AHEAD`] references before its turn.
fn index_keys(snap: &Snapshot, shard: usize, shards: usize) -> (Vec<u32>, Vec<Slot>) {
    let mine =
        |key: u64| !super::is_unresolved(key) && (shards == 1 || shard_of(key, shards) == shard);
    let mut index = KeyIndex::with_capacity(snap.total_refs() / shards + 16);
    let mut ref_slot = Vec::with_capacity(snap.total_refs());
    let mut slots: Vec<Slot> = Vec::new();
    for (n, r) in snap.refs.iter().enumerate() {
        if let Some(ahead) = snap.refs.get(n + PREFETCH_AHEAD) {
            if mine(ahead.key) {
                index.prefetch(ahead.key);
            }
        }
        if !mine(r.key) {
            ref_slot.push(SKIP);
            continue;
        }
        let (i, new) = index.slot(r.key);
        if new {
            slots.push(Slot {
                key: r.key,
                size: r.size,
                refc: r.refc,
                holders: 0,
                seen_refs: 0,
                last: 0,
                served: 0,
            });
        } else {
            let slot = &mut slots[i as usize];
            slot.refc = slot.refc.max(r.refc);
        }
        ref_slot.push(i);
    }
    (ref_slot, slots)
}

const SKIP: u32 = u32::MAX;

fn shard_of(key: u64, shards: usize) -> usize {
    ((key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % shards as u64) as usize
}

/// Attributes every binary of `snap` to its holders. `top_shared` bounds the list of most shared
/// binaries returned.
pub fn attribute(snap: &Snapshot, top_shared: usize) -> Attribution {
    let mut processes = Vec::with_capacity(snap.processes());
    let mut a = attribute_each(snap, top_shared, |p| processes.push(p));
    a.processes = processes;
    a
}

/// As [`attribute`], handing every process's share to `emit`, in snapshot order, instead of
/// keeping them (the result's `processes` is empty): a caller that stores them elsewhere (the
/// NIF, in the packed figures it returns) needs no second copy of 64 bytes a process.
pub fn attribute_each(
    snap: &Snapshot,
    top_shared: usize,
    emit: impl FnMut(ProcessShare),
) -> Attribution {
    finish(snap, vec![attribute_shard(snap, 0, 1, emit)], top_shared)
}

/// As [`attribute`], on `threads` threads: binaries are split among them by key, so each binary
/// is still seen by one thread in process order and the result is identical. Every thread
/// computes figures for every process (64 bytes each), so what it gains depends on memory:
/// where pages come fresh (criterion, the system allocator; the NIF's calls, seconds apart)
/// the threads take their page faults side by side and two are faster than one; with pages
/// reused (jemalloc, calls back to back) one thread was faster on 2 cores.
pub fn attribute_parallel(snap: &Snapshot, top_shared: usize, threads: usize) -> Attribution {
    let threads = threads.clamp(1, 64);
    if threads == 1 {
        return attribute(snap, top_shared);
    }
    let n = snap.processes();
    let parts: Vec<(Part, Vec<ProcessShare>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut processes = Vec::with_capacity(n);
                    let part = attribute_shard(snap, t, threads, |p| processes.push(p));
                    (part, processes)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("attribution thread panicked"))
            .collect()
    });
    let (parts, mut shares): (Vec<Part>, Vec<Vec<ProcessShare>>) = parts.into_iter().unzip();
    let mut processes = std::mem::take(&mut shares[0]);
    for other in &shares[1..] {
        for (acc, p) in processes.iter_mut().zip(other) {
            acc.merge(p);
        }
    }
    let mut a = finish(snap, parts, top_shared);
    a.processes = processes;
    a
}

/// One shard's contribution besides its per-process figures (which go to `emit`).
struct Part {
    summary: Summary,
    shared: Vec<SharedBinary>,
}

fn attribute_shard(
    snap: &Snapshot,
    shard: usize,
    shards: usize,
    mut emit: impl FnMut(ProcessShare),
) -> Part {
    let n = snap.processes();
    let (ref_slot, mut slots) = index_keys(snap, shard, shards);

    for p in 0..n {
        let mark = p as u32 + 1;
        for &i in &ref_slot[snap.bounds[p]..snap.bounds[p + 1]] {
            if i == SKIP {
                continue;
            }
            let slot = &mut slots[i as usize];
            slot.seen_refs = slot.seen_refs.saturating_add(1);
            if slot.last != mark {
                slot.last = mark;
                slot.holders += 1;
            }
        }
    }

    let mut summary = Summary::default();
    debug_assert!(
        n < (u32::MAX / 2) as usize,
        "marks of both passes fit a u32"
    );
    for p in 0..n {
        // Above every pass-1 mark (the VM's process limit is far below 2^31).
        let mark = (n + p) as u32 + 1;
        let mut share = ProcessShare::default();
        let (lo, hi) = (snap.bounds[p], snap.bounds[p + 1]);
        for (r, &i) in snap.refs[lo..hi].iter().zip(&ref_slot[lo..hi]) {
            if i == SKIP {
                // Counted once, by the first shard.
                if shard == 0 && super::is_unresolved(r.key) {
                    share.unresolved += 1;
                }
                continue;
            }
            share.refs += 1;
            share.bytes += r.size;
            let slot = &mut slots[i as usize];
            if slot.last == mark {
                continue;
            }
            slot.last = mark;
            let store = super::store_entry(r.key).is_some();
            let (holders, seen, served) = (slot.holders, slot.seen_refs, slot.served);
            share.add_distinct(slot.size, slot.refc, holders, seen, served, store);
            slot.served += 1;
        }
        summary.refs += share.refs;
        summary.naive_bytes += share.bytes;
        summary.unresolved += share.unresolved;
        summary.store_bytes += share.store_bytes;
        emit(share);
    }

    let mut shared = Vec::new();
    for slot in &slots {
        summary.unique_binaries += 1;
        summary.unique_bytes += slot.size;
        if slot.refc > u64::from(slot.seen_refs) {
            summary.external_binaries += 1;
        }
        if slot.holders > 1 {
            summary.shared_binaries += 1;
            summary.shared_bytes += slot.size;
            shared.push(SharedBinary {
                key: slot.key,
                size: slot.size,
                holders: u64::from(slot.holders),
                refc: slot.refc,
            });
        }
    }
    Part { summary, shared }
}

fn finish(snap: &Snapshot, parts: Vec<Part>, top_shared: usize) -> Attribution {
    let mut summary = Summary::default();
    let mut shared = Vec::new();
    for part in parts {
        summary.merge(&part.summary);
        shared.extend(part.shared);
    }
    // Shards split the binaries, not the processes: each saw every process.
    summary.processes = snap.processes() as u64;

    let weight = |s: &SharedBinary| s.size.saturating_mul(s.holders);
    if shared.len() > top_shared {
        shared.select_nth_unstable_by(top_shared, |a, b| {
            weight(b).cmp(&weight(a)).then(a.key.cmp(&b.key))
        });
        shared.truncate(top_shared);
    }
    shared.sort_unstable_by(|a, b| weight(b).cmp(&weight(a)).then(a.key.cmp(&b.key)));

    Attribution {
        processes: Vec::new(),
        summary,
        top_shared: shared,
    }
}

/// A fast hasher for binary addresses and store keys (both well spread in their high bits after
/// one multiply). Not for untrusted keys: nothing here is.
#[derive(Default)]
pub(crate) struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
        self.0 ^= self.0 >> 29;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(key: u64, size: u64, refc: u64) -> BinRef {
        BinRef { key, size, refc }
    }

    #[test]
    fn one_binary_shared_by_three_counts_once() {
        let mut s = Snapshot::new();
        for _ in 0..3 {
            s.push_process([r(0x1000, 1_000_000, 3)]);
        }
        let a = attribute(&s, 10);
        assert_eq!(a.summary.naive_bytes, 3_000_000);
        assert_eq!(a.summary.unique_bytes, 1_000_000);
        let pss: u64 = a.processes.iter().map(|p| p.pss).sum();
        assert_eq!(pss, 1_000_000);
        assert!(a.processes.iter().all(|p| p.uss == 0 && p.shared == 1));
        // 1_000_000 / 3 leaves 1 byte: the first holder gets it.
        assert_eq!(a.processes[0].pss, 333_334);
        assert_eq!(a.processes[2].pss, 333_333);
        assert_eq!(a.top_shared[0].holders, 3);
    }

    #[test]
    fn exclusive_binary_is_uss_unless_something_else_holds_it() {
        let mut s = Snapshot::new();
        s.push_process([r(1, 500, 1), r(2, 700, 2)]);
        let a = attribute(&s, 10);
        // key 2 has refc 2 but one reference seen: ETS or a NIF holds it too.
        assert_eq!(a.processes[0].uss, 500);
        assert_eq!(a.processes[0].pss, 1200);
        assert_eq!(a.summary.external_binaries, 1);
    }

    #[test]
    fn duplicate_references_in_one_process_count_once_for_uss_and_pss() {
        let mut s = Snapshot::new();
        s.push_process([r(7, 100, 2), r(7, 100, 2)]);
        let a = attribute(&s, 10);
        assert_eq!(a.processes[0].refs, 2);
        assert_eq!(a.processes[0].bytes, 200);
        assert_eq!(a.processes[0].uss, 100);
        assert_eq!(a.processes[0].pss, 100);
        assert_eq!(a.processes[0].distinct, 1);
    }

    #[test]
    fn empty_processes_and_empty_snapshot() {
        let a = attribute(&Snapshot::new(), 5);
        assert_eq!(a.summary, Summary::default());
        let mut s = Snapshot::new();
        s.push_process([]);
        s.push_process([]);
        let a = attribute(&s, 5);
        assert_eq!(a.processes, vec![ProcessShare::default(); 2]);
        assert_eq!(a.summary.processes, 2);
    }

    #[test]
    fn unresolved_references_are_counted_and_left_out_of_every_figure() {
        let u = super::super::unresolved_key(0x5000);
        let mut s = Snapshot::new();
        s.push_process([r(1, 500, 1), r(u, 0, 1), r(u, 0, 1)]);
        s.push_process([r(u, 0, 2)]);
        for a in [attribute(&s, 10), attribute_parallel(&s, 10, 3)] {
            assert_eq!(
                (a.processes[0].unresolved, a.processes[1].unresolved),
                (2, 1)
            );
            assert_eq!(a.processes[0].refs, 1);
            assert_eq!((a.processes[0].uss, a.processes[0].pss), (500, 500));
            assert_eq!(
                a.processes[1],
                ProcessShare {
                    unresolved: 1,
                    ..Default::default()
                }
            );
            assert_eq!(a.summary.unresolved, 3);
            assert_eq!((a.summary.unique_binaries, a.summary.refs), (1, 1));
            assert!(a.top_shared.is_empty());
        }
    }

    #[test]
    fn store_bytes_are_each_holders_and_summed_per_holder() {
        let e = super::super::store_key(9);
        let mut s = Snapshot::new();
        s.push_process([r(e, 4_000, 3), r(e, 4_000, 3), r(1, 70, 1)]);
        s.push_process([r(e, 4_000, 3)]);
        s.push_process([r(2, 80, 1)]);
        for a in [attribute(&s, 10), attribute_parallel(&s, 10, 2)] {
            let each: Vec<u64> = a.processes.iter().map(|p| p.store_bytes).collect();
            assert_eq!(each, [4_000, 4_000, 0]);
            assert_eq!(a.summary.store_bytes, 8_000);
        }
        // attribute_each hands over exactly what attribute keeps, in order.
        let mut emitted = Vec::new();
        let a = attribute_each(&s, 10, |p| emitted.push(p));
        assert!(a.processes.is_empty());
        assert_eq!(emitted, attribute(&s, 10).processes);
        assert_eq!(a.summary, attribute(&s, 10).summary);
    }

    #[test]
    fn truncated_snapshots_are_as_they_were() {
        let mut s = Snapshot::new();
        s.push_process([r(1, 10, 1)]);
        s.push_process([r(2, 20, 1), r(3, 30, 1)]);
        s.push_ref(r(5, 50, 1));
        s.truncate(1);
        s.push_ref(r(4, 40, 1));
        s.end_process();
        assert_eq!(s.processes(), 2);
        assert_eq!(s.process(0), &[r(1, 10, 1)]);
        assert_eq!(s.process(1), &[r(4, 40, 1)]);
        assert_eq!(s.total_refs(), 2);
        s.truncate(5);
        assert_eq!(s.processes(), 2);
        s.truncate(0);
        assert_eq!((s.processes(), s.total_refs()), (0, 0));
    }

    #[test]
    fn top_shared_is_bounded_and_ordered() {
        let mut s = Snapshot::new();
        for p in 0..4u64 {
            s.push_process((0..=p).map(|k| r(k, 10 * (k + 1), 4)));
        }
        let a = attribute(&s, 2);
        assert_eq!(a.top_shared.len(), 2);
        assert!(
            a.top_shared[0].size * a.top_shared[0].holders
                >= a.top_shared[1].size * a.top_shared[1].holders
        );
    }
}
