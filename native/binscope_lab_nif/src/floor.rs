//! The physical floor of a put (NIFs prefixed `floor_`): the copy of the same bytes in the same
//! steady cycle the store bench runs (a window of 8 live buffers), so the bench report can show
//! how close `Binscope.Store.put/2` and `:binary.copy/1` come to the copy itself.

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
