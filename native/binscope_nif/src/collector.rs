//! NIFs of the collector's target side (prefixed `collector_`), called by `:binscope_collector`
//! on the node being inspected: calibration, the store's mark, store binary resolution and the
//! store keys still live after a GC round. They need that node's store, so they run where it is.
//!
//! Store binaries reach the VM as resource binaries, which `process_info(pid, :binary)` lists under
//! the address of the resource's magic binary with its own small size (72 bytes here). The
//! collector calibrates the constant distance between that address and our resource object once
//! per node with [`collector_probe`]; [`collector_resolve`] then replaces such entries by the
//! store entry's key and real size. A scan reads [`collector_mark`] before it lists anything, so
//! that an address reused by a newer entry meanwhile is never credited to the old holder: such a
//! binary becomes an unresolved key instead (see `binscope_core::accounting::handles`).

use binscope_core::accounting::{store_entry, store_key, unresolved_key, Resolution};
use rustler::{Env, Resource, ResourceArc, Term};

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
fn collector_probe(env: Env) -> (Term, u64) {
    let probe = ResourceArc::new(Probe(0));
    let addr = &*probe as *const Probe as u64;
    let bin = probe.make_binary(env, |_| &PROBE_BYTES[..]);
    (bin.to_term(env), addr)
}

type Bins = Vec<(u64, u64, u64)>;

/// The store's handle counter: a scan reads it before listing any process, and passes it to
/// [`collector_resolve`].
#[rustler::nif]
fn collector_mark() -> u64 {
    HANDLES.mark()
}

/// Rewrites every `{addr, size, refc}` whose `addr + offset` is a store resource that lived
/// through the whole listing (created before `mark`) and whose size is `magic_size` or the
/// entry's own size as `{store_key, real_size, refc}`; one that may be a store binary but cannot
/// be identified (its address reused or its resource released since `mark`) as
/// `{unresolved_key(addr), 0, refc}`. Dirty: one call covers a whole node.
#[rustler::nif(schedule = "DirtyCpu")]
fn collector_resolve(lists: Vec<Bins>, offset: i64, magic_size: u64, mark: u64) -> Vec<Bins> {
    let how = ResolveWith {
        offset,
        magic_size,
        mark,
        patched: crate::gc_pressure::calibrated(),
    };
    lists
        .into_iter()
        .map(|bins| {
            bins.into_iter()
                .map(|(addr, size, refc)| how.resolve(addr, size, refc))
                .collect()
        })
        .collect()
}

/// How a scan resolves the binaries it listed: the calibration's offset and magic size, the
/// mark it read before listing, and whether store binaries may list at their own size.
#[derive(Clone, Copy)]
pub(crate) struct ResolveWith {
    pub offset: i64,
    pub magic_size: u64,
    pub mark: u64,
    pub patched: bool,
}

impl ResolveWith {
    /// `{addr, size, refc}` as listed, as attribution counts it: a store entry's key and real
    /// size, an unresolved key, or as listed (see [`collector_resolve`]).
    pub fn resolve(&self, addr: u64, size: u64, refc: u64) -> (u64, u64, u64) {
        let object = (addr as i64).wrapping_add(self.offset) as usize;
        let resolution = if self.patched {
            HANDLES.resolve_any_size(object, size, self.magic_size, self.mark)
        } else {
            HANDLES.resolve(object, size, self.magic_size, self.mark)
        };
        match resolution {
            Resolution::Store { id, size } => (store_key(id), size, refc),
            Resolution::Unresolved => (unresolved_key(addr), 0, refc),
            Resolution::NotStore => (addr, size, refc),
        }
    }
}

/// The store entries among `keys` that are still live on this node (the collector asks after
/// forcing collections, on the node that owns the store).
#[rustler::nif(schedule = "DirtyCpu")]
fn collector_live_store_keys(keys: Vec<u64>) -> Vec<u64> {
    live_store_keys(keys)
}

/// The store keys among `keys` whose entries are live (other keys are left out).
pub(crate) fn live_store_keys(keys: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let ids: Vec<u64> = keys.into_iter().filter_map(store_entry).collect();
    ids.iter()
        .zip(REGISTRY.contains_ids(&ids))
        .filter_map(|(&id, live)| live.then_some(store_key(id)))
        .collect()
}
