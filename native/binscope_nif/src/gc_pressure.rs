//! NIFs of `Binscope.Store.GcPressure` (prefixed `gc_pressure_`): giving store binaries the GC
//! pressure of ordinary refc binaries on OTP 27 and later.
//!
//! A process is collected when the bytes of the off-heap binaries it references (its virtual
//! binary heap) pass a threshold. Up to OTP 26 `enif_make_resource_binary` charged the binary's
//! size. OTP 27 charges every reference the `orig_size` of the `Binary` behind it instead (its
//! `ERTS_BR_OVERHEAD`, also used when a message copies the reference to another process and when
//! a GC sweeps), and a resource's `Binary` is the small magic binary that holds the resource
//! object (about 72 bytes), whatever data the binary shows (OTP issue 11611). A process could
//! then hold gigabytes of dropped store binaries without ever being collected.
//!
//! The remedy: write the payload's length into that magic binary's `orig_size` before the first
//! reference exists. Every charge the VM makes is then the payload's, exactly as for a VM binary
//! of that size, in the creating process, in every receiver and after every GC. The field is
//! found, and the write verified, on each node at load (`Binscope.Native`'s on_load runs
//! `Binscope.Store.GcPressure.calibrate/0`): a probe's listed `{address, size}` from
//! `process_info(self(), :binary)` anchors the search, and the patch is enabled only if a second
//! probe then lists with its payload's size and charges the process's virtual binary heap. Where
//! the VM already charges the payload (OTP 25, or a future OTP with the upstream fix) nothing is
//! written. Nothing else in the VM reads a magic binary's `orig_size`, except crash dumps, which
//! print `orig_size` bytes of each binary (see the module docs in Elixir).

use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

use rustler::{Env, NifResult, Resource, ResourceArc, Term};

use crate::store::StoreBinary;

/// A resource of the same size and alignment as [`StoreBinary`], so its object sits at the same
/// distance from its magic binary.
pub struct Probe(#[allow(dead_code)] usize);

const _: () = assert!(std::mem::size_of::<Probe>() == std::mem::size_of::<StoreBinary>());
const _: () = assert!(std::mem::align_of::<Probe>() == std::mem::align_of::<StoreBinary>());

#[rustler::resource_impl]
impl Resource for Probe {}

/// What probes point at: the VM never copies these bytes, it only counts them.
const PROBE_MAX: usize = 1 << 20;
static PROBE_BYTES: [u8; PROBE_MAX] = [0; PROBE_MAX];

/// Distance from a resource object to its magic binary's `orig_size` word, once calibrated.
static FIELD_OFFSET: AtomicIsize = AtomicIsize::new(0);
/// Calibrated and verified on this node.
static CALIBRATED: AtomicBool = AtomicBool::new(false);
/// Turned on (by calibration) and not turned off (`Binscope.Store.set_gc_pressure/1`).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The largest distance searched between a listed magic binary and its resource object.
const MAX_HEADER: usize = 256;

/// The `orig_size` word of the magic binary behind the resource object at `object`.
fn field(object: usize) -> *mut isize {
    (object as isize).wrapping_add(FIELD_OFFSET.load(Ordering::Relaxed)) as *mut isize
}

/// Charges holders of `resource` for `len` bytes (a no-op unless calibrated and enabled). Must
/// run before the first binary of `resource` is made: the VM reads the size at each reference.
pub fn charge(resource: &ResourceArc<StoreBinary>, len: usize) {
    if ENABLED.load(Ordering::Relaxed) {
        let object = &**resource as *const StoreBinary as usize;
        // SAFETY: calibration verified on this node that `field(object)` is the `orig_size` word
        // of the magic binary holding a resource object of this size and alignment, which lives
        // as long as `resource`. No binary of it exists yet, so no other thread reads the word.
        unsafe { field(object).write(len as isize) }
    }
}

/// Whether store binaries may be listed at their own size on this node: the patch was
/// calibrated (binaries made while it was enabled keep their size after it is turned off).
pub fn calibrated() -> bool {
    CALIBRATED.load(Ordering::Relaxed)
}

/// `{binary, object_address}`: a probe binary showing `len` bytes of a static buffer. With
/// `charged`, the calibrated patch is applied first (as for a store binary).
#[rustler::nif]
fn gc_pressure_probe(env: Env, len: usize, charged: bool) -> NifResult<(Term, u64)> {
    if len > PROBE_MAX || (charged && !CALIBRATED.load(Ordering::Relaxed)) {
        return Err(rustler::Error::BadArg);
    }
    let probe = ResourceArc::new(Probe(0));
    let object = &*probe as *const Probe as usize;
    if charged {
        // SAFETY: as in `charge`; the probe has StoreBinary's layout and no binary yet.
        unsafe { field(object).write(len as isize) }
    }
    let bin = probe.make_binary(env, |_| &PROBE_BYTES[..len]);
    Ok((bin.to_term(env), object as u64))
}

/// Candidate `nth` (0-based) for the `orig_size` word of the probe binary `probe` (listed by the
/// VM at `listed` with size `size`): the words between the listed address and the object equal to
/// `size`, in address order. Usually one; another header word can hold the same value by chance
/// (seen once on OTP 27), so the caller tries each with `gc_pressure_poke` and keeps the one the
/// VM lists. Sets the offset (not yet enabled) and returns `{offset, candidates}`, or
/// `{:error, reason}`.
#[rustler::nif]
fn gc_pressure_locate(
    probe: ResourceArc<Probe>,
    listed: u64,
    size: u64,
    nth: usize,
) -> Result<(i64, usize), String> {
    let (object, listed) = (&*probe as *const Probe as usize, listed as usize);
    if listed >= object || object - listed > MAX_HEADER || listed % 8 != 0 || object % 8 != 0 {
        return Err(format!(
            "listed address {listed:#x} is not a header below object {object:#x}"
        ));
    }
    let words = (object - listed) / 8;
    // SAFETY: [listed, object) is the header of the magic binary that holds our live probe: the
    // VM listed `listed` for a binary of this process and the object lies within MAX_HEADER
    // bytes after it, inside the same allocation.
    let matches: Vec<usize> = (0..words)
        .filter(|&i| unsafe { ((listed + 8 * i) as *const u64).read() } == size)
        .collect();
    match matches.get(nth) {
        Some(&i) => {
            let offset = (listed + 8 * i) as isize - object as isize;
            FIELD_OFFSET.store(offset, Ordering::Relaxed);
            CALIBRATED.store(true, Ordering::Relaxed);
            Ok((offset as i64, matches.len()))
        }
        None if matches.is_empty() => Err(format!(
            "no word of the header equals the listed size {size}"
        )),
        None => Err(format!(
            "no candidate {nth}: {} words of the header equal the listed size {size}",
            matches.len()
        )),
    }
}

/// Writes `value` into the located word of the probe binary `probe`: the check that the word is
/// the size the VM lists, and the restore after it (the word held the listed size before).
#[rustler::nif]
fn gc_pressure_poke(probe: ResourceArc<Probe>, value: u64) -> NifResult<bool> {
    if !CALIBRATED.load(Ordering::Relaxed) || value > isize::MAX as u64 {
        return Err(rustler::Error::BadArg);
    }
    let object = &*probe as *const Probe as usize;
    // SAFETY: `probe` is a live probe (it has StoreBinary's layout) and the located word lies in
    // its magic binary's header.
    unsafe { field(object).write(value as isize) }
    Ok(true)
}

/// Forgets the calibration (a check after `gc_pressure_locate` failed).
#[rustler::nif]
fn gc_pressure_reset() -> bool {
    ENABLED.store(false, Ordering::Relaxed);
    CALIBRATED.store(false, Ordering::Relaxed);
    true
}

/// Enables or disables the patch for binaries made from now on; `false` when not calibrated.
#[rustler::nif]
fn gc_pressure_enable(on: bool) -> bool {
    if on && !CALIBRATED.load(Ordering::Relaxed) {
        return false;
    }
    ENABLED.store(on, Ordering::Relaxed);
    true
}

/// `{calibrated?, enabled?, offset}`.
#[rustler::nif]
fn gc_pressure_state() -> (bool, bool, i64) {
    (
        CALIBRATED.load(Ordering::Relaxed),
        ENABLED.load(Ordering::Relaxed),
        FIELD_OFFSET.load(Ordering::Relaxed) as i64,
    )
}
