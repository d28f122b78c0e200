//! The physical floor of a put (NIFs prefixed `floor_`): the copy of the same bytes in the same
//! steady cycle the store bench runs (a window of 8 live buffers), so the bench report can show
//! how close `Binscope.Store.put/2` and `:binary.copy/1` come to the copy itself; and a put
//! built up piece by piece, each floor adding one cost to the one before: the VM's resource
//! machinery alone ([`floor_vm_resource`]), plus the copy into always-warm memory
//! ([`floor_ring_put`]), plus a payload made as the store makes its own ([`floor_resource_put`]).

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Instant;

use binscope_core::store::{release_backlog, stream};

const WINDOW: usize = 8;

/// `{warm_ns, fresh_ns}` per copy of `size` bytes over `calls` copies: `warm` copies into the 8
/// buffers of the window in turn (allocated once: the memory bandwidth floor), the faster of
/// `memcpy` and the store's own streaming copy (which wins from `stream::STREAM_MIN` on, so a
/// `memcpy` floor alone would sit above what the store reaches there); `fresh` allocates
/// each destination and drops the oldest of the window (what a copy that keeps its result pays
/// to the system allocator). Runs on a dirty scheduler: it may take many milliseconds.
#[rustler::nif(schedule = "DirtyCpu")]
fn floor_copy(size: usize, calls: usize) -> (u64, u64) {
    let src = vec![1u8; size];
    let calls = calls.max(1);
    // Written once before timing: `vec![0; n]` maps zero pages lazily, and the first write to
    // each page would fault (that is the fresh-page cost, measured by `fresh`, not the floor).
    let mut ring: Vec<Vec<std::mem::MaybeUninit<u8>>> = (0..WINDOW)
        .map(|_| vec![std::mem::MaybeUninit::new(1); size])
        .collect();
    let mut time = |copy: fn(&mut [std::mem::MaybeUninit<u8>], &[u8])| {
        let start = Instant::now();
        for i in 0..calls {
            copy(&mut ring[i % WINDOW], black_box(&src));
            black_box(&ring[i % WINDOW]);
        }
        start.elapsed().as_nanos() as u64 / calls as u64
    };
    let memcpy = time(|dst, src| {
        assert_eq!(dst.len(), src.len());
        // SAFETY: `dst` and `src` have the same length (asserted) and do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast(), src.len()) }
    });
    let warm = memcpy.min(time(stream::copy));
    drop(ring);
    let mut window: VecDeque<Vec<u8>> = VecDeque::with_capacity(WINDOW + 1);
    let start = Instant::now();
    for _ in 0..calls {
        window.push_back(black_box(&src).to_vec());
        if window.len() > WINDOW {
            drop(window.pop_front());
        }
    }
    let fresh = start.elapsed().as_nanos() as u64 / calls as u64;
    (warm, fresh)
}

/// The resource behind a [`floor_resource_put`] binary: the copied bytes, nothing else. They are
/// a store payload (`binscope_core::store::buffer`: the same guards, size classes and payload
/// cache as the store's), so what the store pays beyond this floor is its bookkeeping alone. One
/// difference: a block the cache cannot supply comes from this library's allocator, glibc's
/// malloc (a second jemalloc in the VM would export the same symbols as the store's).
struct FloorBinary(binscope_core::store::buffer::Payload);

#[rustler::resource_impl]
impl rustler::Resource for FloorBinary {}

impl Drop for FloorBinary {
    fn drop(&mut self) {
        release_backlog::released();
    }
}

/// The floor of any zero-copy native put: the NIF call, a copy into a native payload made as the
/// store makes its own, a resource wrapping it handed out as a refc binary, and (when the VM
/// drops the binary) the resource's destructor freeing the payload, released as promptly as the
/// store's (the same backlog rule, `binscope_core::store::release_backlog`). No registry, no
/// accounting, no limits: what `Binscope.Store.put/2` pays beyond this is the store's own.
/// Normal scheduler: for the bench's sizes under the store's dirty threshold only.
#[rustler::nif]
fn floor_resource_put<'a>(
    env: rustler::Env<'a>,
    data: rustler::Binary,
) -> rustler::NifResult<rustler::Term<'a>> {
    let payload = binscope_core::store::buffer::try_copy(data.as_slice())
        .ok_or(rustler::Error::RaiseAtom("alloc_failed"))?;
    let resource = rustler::ResourceArc::new(FloorBinary(payload));
    release_backlog::made(data.len());
    if release_backlog::should_yield() {
        rustler::schedule::consume_timeslice(env, 100);
    }
    Ok(resource.make_binary(env, |r| &r.0).to_term(env))
}

/// The largest size of the two floors below (the bench's sizes on normal schedulers).
const VM_RESOURCE_MAX: usize = 64 * 1024;
/// What [`floor_vm_resource`] binaries show: bytes the VM only counts, never copies.
static VM_RESOURCE_BYTES: [u8; VM_RESOURCE_MAX] = [1; VM_RESOURCE_MAX];

/// An empty resource: the VM's resource machinery and nothing of ours.
struct EmptyResource;

#[rustler::resource_impl]
impl rustler::Resource for EmptyResource {}

/// The VM's part of [`floor_resource_put`] alone: the NIF call, a fresh resource, a refc binary
/// of `size` bytes made from it and, when the VM drops that binary, the resource's destructor.
/// No copy and no payload: the binary shows a static buffer (so `size` is at most 64 KiB). No
/// native put that hands out one resource binary per put can be faster than this.
#[rustler::nif]
fn floor_vm_resource(env: rustler::Env, size: usize) -> rustler::NifResult<rustler::Term> {
    let bytes = VM_RESOURCE_BYTES
        .get(..size)
        .ok_or(rustler::Error::BadArg)?;
    let resource = rustler::ResourceArc::new(EmptyResource);
    Ok(resource.make_binary(env, |_| bytes).to_term(env))
}

/// Slots of [`floor_ring_put`]'s ring: twice the bench's window, so a slot is rewritten only
/// after the binary that showed it left the window.
const RING_SLOTS: usize = 16;

thread_local! {
    /// This scheduler thread's ring (`RING_SLOTS` slots of `VM_RESOURCE_MAX` bytes) and the next
    /// slot. Allocated once and never freed: binaries made from it may outlive any use.
    static RING: std::cell::Cell<(*mut u8, usize)> = const { std::cell::Cell::new((std::ptr::null_mut(), 0)) };
}

/// [`floor_vm_resource`] plus the copy: the input is copied into one of a few warm buffers that
/// are never freed nor allocated again (so always in the cache), and the binary shows that
/// copy. What a put would cost if its payload memory were free and always warm: no store can
/// do better. A lab probe only: a slot is rewritten 16 calls later, so a binary kept longer
/// than that shows newer bytes (never freed memory, so nothing unsafe is read).
#[rustler::nif]
fn floor_ring_put<'a>(
    env: rustler::Env<'a>,
    data: rustler::Binary,
) -> rustler::NifResult<rustler::Term<'a>> {
    let len = data.len();
    if len > VM_RESOURCE_MAX {
        return Err(rustler::Error::BadArg);
    }
    let slot = RING.with(|ring| {
        let (mut base, next) = ring.get();
        if base.is_null() {
            base =
                Box::leak(vec![1u8; RING_SLOTS * VM_RESOURCE_MAX].into_boxed_slice()).as_mut_ptr();
        }
        ring.set((base, (next + 1) % RING_SLOTS));
        // SAFETY: `next < RING_SLOTS`, so the slot lies inside the leaked ring.
        unsafe { base.add(next * VM_RESOURCE_MAX) }
    });
    // SAFETY: the slot has room for `len <= VM_RESOURCE_MAX` bytes and no Rust reference to it
    // is alive (the slice below is made after the copy and lives only for this call; the VM
    // reads the bytes, Rust never does again). The input may be an earlier binary of this ring,
    // even this very slot: `copy` allows the overlap.
    let bytes: &'static [u8] = unsafe {
        std::ptr::copy(data.as_slice().as_ptr(), slot, len);
        std::slice::from_raw_parts(slot, len)
    };
    let resource = rustler::ResourceArc::new(EmptyResource);
    Ok(resource.make_binary(env, |_| bytes).to_term(env))
}
