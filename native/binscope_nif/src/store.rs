//! NIFs of `Binscope.Store`: term conversion, scheduler choice and resource lifetimes only; the
//! accounting rules live in `binscope_core::store`.
//!
//! Every stored binary reaches Elixir as a resource binary: a real refc binary (ProcBin) whose
//! bytes are the core's native buffer, with no copy. The VM drops the `StoreBinary` resource when
//! the last ProcBin is garbage-collected, which drops the `Arc<Blob>` and releases the entry.
//!
//! Fills and interns have two NIFs each: a normal one for small sizes and a `_dirty` one that
//! runs on a dirty CPU scheduler; `Binscope.Store` picks by size (threshold measured, see its
//! docs). Puts have a normal one for small sizes and `store_put_large`, which starts on the normal
//! scheduler and continues on a dirty one once past its time budget.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use binscope_core::accounting::HandleIndex;
use binscope_core::store::{
    Blob, LabelStats, LiveEntry, LiveFilter, OwnerStats, PendingPut, Registry, Stats,
    COPY_FIRST_MAX, MAX_BINARY_SIZE, MAX_LABELS, MAX_LABEL_BYTES,
};
use binscope_core::StoreError;
use rustler::{
    Binary, Decoder, Encoder, Env, LocalPid, Monitor, NifMap, NifResult, Resource, ResourceArc,
    Term,
};

use crate::error::{self, Reason};
use crate::label::{self, LabelTerm};
use crate::timeslice::{charged, charged_estimate};

/// A store owner: a local pid, compared and hashed by its term (a local pid is an immediate
/// term, equal for equal pids), so the registry's owner lookups never call into the VM (rustler's
/// `LocalPid` hashes with `enif_hash` and compares with `enif_compare_pids`).
#[derive(Clone, Copy)]
pub struct Owner {
    pub pid: LocalPid,
    word: rustler::sys::ErlNifTerm,
}

impl Owner {
    fn new(env: Env, pid: LocalPid) -> Self {
        Owner {
            pid,
            word: pid.encode(env).as_c_arg(),
        }
    }

    fn decode(term: Term) -> NifResult<Self> {
        Ok(Owner {
            pid: LocalPid::decode(term)?,
            word: term.as_c_arg(),
        })
    }
}

impl PartialEq for Owner {
    fn eq(&self, other: &Self) -> bool {
        self.word == other.word
    }
}

impl Eq for Owner {}

impl Hash for Owner {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.word.hash(state);
    }
}

/// The node-wide registry. It lives as long as the library is loaded. Payloads are admitted only
/// while the process has room for them and a headroom (see `space`).
pub static REGISTRY: LazyLock<Registry<Owner>> =
    LazyLock::new(|| Registry::with_space_probe(crate::space::available));

/// The resource behind each stored binary handed to Elixir.
pub struct StoreBinary(Arc<Blob<Owner>>);

#[rustler::resource_impl]
impl Resource for StoreBinary {}

impl StoreBinary {
    /// The resource object's address: what `accounting` resolves VM-listed addresses to.
    pub fn addr(&self) -> usize {
        self as *const StoreBinary as usize
    }
}

impl Drop for StoreBinary {
    fn drop(&mut self) {
        crate::release_backlog::released();
        HANDLES.remove(self.addr());
    }
}

/// Live store resources by address, so scans see store binaries at their real size.
pub static HANDLES: LazyLock<HandleIndex> = LazyLock::new(HandleIndex::new);

/// One resource object monitors every owner process; its `down` marks the owner dead.
///
/// Created on first use, not in `load`: resource types opened during `load` are committed only
/// after it returns, so an object allocated inside `load` has no monitor slot and
/// `enif_monitor_process` refuses it (returns -1). Seen on this project's machines with OTP 25.
static WATCHER: OnceLock<ResourceArc<OwnerWatch>> = OnceLock::new();

pub struct OwnerWatch;

#[rustler::resource_impl]
impl Resource for OwnerWatch {
    const IMPLEMENTS_DOWN: bool = true;

    fn down<'a>(&'a self, env: Env<'a>, pid: LocalPid, _monitor: Monitor) {
        REGISTRY.owner_down(&Owner::new(env, pid));
    }
}

pub fn on_load(_env: Env) -> bool {
    REGISTRY.set_memory_limit(machine_memory_limit());
    crate::allocator::use_zeroed_arena();
    true
}

/// Physical memory, lowered by this process's cgroup limit (v2 `memory.max` of its own cgroup
/// or of the root, else v1 `memory.limit_in_bytes`), read once.
fn machine_memory_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let own = read("/proc/self/cgroup").and_then(|c| {
        c.lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
            .map(|path| format!("/sys/fs/cgroup{}/memory.max", path.trim_end_matches('/')))
    });
    let cgroup = own
        .as_deref()
        .and_then(read)
        .or_else(|| read("/sys/fs/cgroup/memory.max"))
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"));
    binscope_core::store::memory_limit(read("/proc/meminfo").as_deref(), cgroup.as_deref())
}

type StoreResult<'a> = NifResult<Result<Term<'a>, Reason>>;

/// Starts the monitor of an owner the registry sees for the first time (once per owner);
/// false when the process is not alive.
fn monitor<'a>(env: Env<'a>) -> impl FnMut(&Owner) -> bool + 'a {
    move |owner| {
        let watcher = WATCHER.get_or_init(|| ResourceArc::new(OwnerWatch));
        watcher.monitor(Some(env), &owner.pid).is_some()
    }
}

/// Wraps a blob in a fresh resource and returns it as a refc binary (zero copy).
fn to_binary<'a>(env: Env<'a>, blob: Arc<Blob<Owner>>) -> Term<'a> {
    let (id, size) = (blob.id(), blob.len() as u64);
    let resource = ResourceArc::new(StoreBinary(blob));
    crate::gc_pressure::charge(&resource, size as usize);
    HANDLES.insert(resource.addr(), id, size);
    crate::release_backlog::made(size as usize);
    resource.make_binary(env, |r| r.0.bytes()).to_term(env)
}

fn put<'a>(env: Env<'a>, data: Binary, label: Term, owner: Term) -> StoreResult<'a> {
    let (label, owner) = (label::decode(label)?, Owner::decode(owner)?);
    let made = REGISTRY.put_watched(data.as_slice(), label, owner, &mut monitor(env));
    Ok(made.map(|blob| to_binary(env, blob)).map_err(Reason))
}

/// `fill` arrives as `u32` because rustler's `u8` decoder truncates (256 would become 0).
/// A long fill stops (`{:error, :cancelled}`, nothing counted) as soon as the caller is dead.
fn alloc<'a>(env: Env<'a>, size: u64, fill: u32, label: Term, owner: Term) -> StoreResult<'a> {
    let fill = u8::try_from(fill).map_err(|_| rustler::Error::BadArg)?;
    let (label, owner) = (label::decode(label)?, Owner::decode(owner)?);
    let caller = env.pid();
    let caller_alive = || env.is_process_alive(caller);
    let made = REGISTRY.alloc_watched(size, fill, label, owner, &mut monitor(env), caller_alive);
    Ok(made.map(|blob| to_binary(env, blob)).map_err(Reason))
}

/// Returns `{:ok, {binary, hit?}}`.
fn intern<'a>(env: Env<'a>, data: Binary, label: Term, owner: Term) -> StoreResult<'a> {
    let (label, owner) = (label::decode(label)?, Owner::decode(owner)?);
    let made = REGISTRY.intern_watched(data.as_slice(), label, owner, &mut monitor(env));
    Ok(made
        .map(|i| (to_binary(env, i.blob), i.hit).encode(env))
        .map_err(Reason))
}

#[rustler::nif]
fn store_put<'a>(env: Env<'a>, data: Binary, label: Term, owner: Term) -> StoreResult<'a> {
    let made = charged_estimate(env, data.len(), || put(env, data, label, owner));
    crate::release_backlog::yield_if_backlogged(env);
    made
}

/// Normal-scheduler time a large put may copy for before it moves to a dirty scheduler. The
/// move costs two thread switches, so a put that fits stays here: measured on the project's
/// 2-core machine in steady cycles of puts, normal against dirty, 16.9 against 33.5 µs a put at
/// 256 KiB and 84-108 against 90-114 µs at 1 MiB. A copy step ([`buffer::COPY_STEP`], 64 KiB)
/// takes at most ~40 µs even into fresh pages, so the call ends well inside the charged slice
/// (`timeslice::FULL_SLICE_NS`, 0.5 ms).
///
/// [`buffer::COPY_STEP`]: binscope_core::store::buffer::COPY_STEP
const PUT_BUDGET: Duration = Duration::from_micros(200);

/// Bytes a dirty continuation copies between two checks that its caller is still alive (as
/// fills do, see `binscope_core::store::buffer::FILL_CHUNK`).
const ALIVE_CHECK_BYTES: usize = binscope_core::store::buffer::FILL_CHUNK;

/// A large put or filled alloc that ran past [`PUT_BUDGET`]: its reservation and partly written
/// payload, taken by the dirty continuation ([`put_continue`]) that finishes it. No NIF takes
/// one, so only that continuation can. Dropped unfinished (its caller was killed before the
/// continuation ran), it frees the payload and gives the reservation back.
pub struct PendingPutResource {
    put: std::sync::Mutex<Option<PendingPut<Owner>>>,
    source: Source,
}

/// What a pending put writes, which the continuation must be given again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A binary's address and length (a put).
    Copy(usize, usize),
    /// A fill byte (an alloc).
    Fill(u8),
}

#[rustler::resource_impl]
impl Resource for PendingPutResource {}

/// What [`store_put_large`] returns: the put's result, or the continuation to run it to the end
/// on a dirty scheduler (`enif_schedule_nif`: the caller sees one call).
pub enum LargePut<'a> {
    Done(Term<'a>),
    Continue {
        /// The NIF's name, shown in the caller's stack while the continuation runs.
        name: &'static std::ffi::CStr,
        pending: Term<'a>,
        data: Term<'a>,
    },
}

unsafe impl rustler::codegen_runtime::NifReturnable for LargePut<'_> {
    unsafe fn into_returned(self, _env: Env) -> rustler::codegen_runtime::NifReturned {
        use rustler::codegen_runtime::NifReturned;
        match self {
            LargePut::Done(term) => NifReturned::Term(term.as_c_arg()),
            LargePut::Continue {
                name,
                pending,
                data,
            } => NifReturned::Reschedule {
                fun_name: name.into(),
                flags: rustler::schedule::SchedulerFlags::DirtyCpu,
                fun: put_continue,
                args: vec![pending.as_c_arg(), data.as_c_arg()],
            },
        }
    }
}

/// A large put (`Binscope.Store` sends those of 256 KiB and more here; any size is correct, the
/// bytes are reserved before the copy): it copies on this normal scheduler for up to
/// [`PUT_BUDGET`] and, if the copy is not done by then, goes on where it stopped on a dirty
/// scheduler. So the choice of scheduler follows the time the copy really takes (fresh pages, a
/// busy memory bus), not the size alone.
#[rustler::nif]
fn store_put_large<'a>(
    env: Env<'a>,
    data: Binary<'a>,
    label: Term<'a>,
    owner: Term<'a>,
) -> NifResult<LargePut<'a>> {
    let (label, owner) = (label::decode(label)?, Owner::decode(owner)?);
    let started = std::time::Instant::now();
    let outcome = charged(env, || {
        let mut put = REGISTRY.begin_put_watched(data.len(), label, owner, &mut monitor(env))?;
        if put.copy_from(data.as_slice(), || started.elapsed() < PUT_BUDGET) {
            let blob = put.commit().expect("a complete copy commits");
            return Ok(Ok(to_binary(env, blob)));
        }
        Ok(Err(put))
    });
    crate::release_backlog::yield_if_backlogged(env);
    match outcome {
        Ok(Ok(binary)) => Ok(LargePut::Done(Ok::<_, Reason>(binary).encode(env))),
        Err(e) => Ok(LargePut::Done(Err::<Term, _>(Reason(e)).encode(env))),
        Ok(Err(put)) => {
            let source = Source::Copy(data.as_slice().as_ptr() as usize, data.len());
            Ok(continuation(
                env,
                c"store_put_large",
                put,
                source,
                data.to_term(env),
            ))
        }
    }
}

/// A large alloc with a non-zero fill (`Binscope.Store` sends those of 256 KiB and more here; a
/// zero fill goes to `store_alloc_dirty`, whose fresh pages are zero without a write, in a call
/// that cannot be cut in steps). As [`store_put_large`]: it fills for up to [`PUT_BUDGET`] on
/// this normal scheduler, then goes on on a dirty one.
#[rustler::nif]
fn store_alloc_large<'a>(
    env: Env<'a>,
    size: u64,
    fill: u32,
    label: Term<'a>,
    owner: Term<'a>,
) -> NifResult<LargePut<'a>> {
    let byte = u8::try_from(fill).map_err(|_| rustler::Error::BadArg)?;
    let (label, owner) = (label::decode(label)?, Owner::decode(owner)?);
    let len = usize::try_from(size).unwrap_or(usize::MAX);
    let started = std::time::Instant::now();
    let outcome = charged(env, || {
        let mut put = REGISTRY.begin_put_watched(len, label, owner, &mut monitor(env))?;
        if put.fill_with(byte, || started.elapsed() < PUT_BUDGET) {
            let blob = put.commit().expect("a complete fill commits");
            return Ok(Ok(to_binary(env, blob)));
        }
        Ok(Err(put))
    });
    crate::release_backlog::yield_if_backlogged(env);
    match outcome {
        Ok(Ok(binary)) => Ok(LargePut::Done(Ok::<_, Reason>(binary).encode(env))),
        Err(e) => Ok(LargePut::Done(Err::<Term, _>(Reason(e)).encode(env))),
        Ok(Err(put)) => Ok(continuation(
            env,
            c"store_alloc_large",
            put,
            Source::Fill(byte),
            byte.encode(env),
        )),
    }
}

/// The dirty continuation of an unfinished put or alloc: its state, and the source term
/// (the binary or the fill byte) it is given again.
fn continuation<'a>(
    env: Env<'a>,
    name: &'static std::ffi::CStr,
    put: PendingPut<Owner>,
    source: Source,
    data: Term<'a>,
) -> LargePut<'a> {
    let pending = ResourceArc::new(PendingPutResource {
        put: std::sync::Mutex::new(Some(put)),
        source,
    });
    LargePut::Continue {
        name,
        pending: pending.encode(env),
        data,
    }
}

/// The dirty continuation of [`store_put_large`] and [`store_alloc_large`]: writes the rest,
/// commits and returns what the put or alloc returns. Stops with `{:error, :cancelled}` (nothing counted) once its caller is dead.
unsafe extern "C" fn put_continue(
    env: *mut rustler::sys::ErlNifEnv,
    argc: rustler::codegen_runtime::c_int,
    argv: *const rustler::sys::ErlNifTerm,
) -> rustler::sys::ErlNifTerm {
    let lifetime = ();
    // SAFETY: the VM calls this as a NIF (scheduled by `store_put_large`) with `argc` terms.
    let env = unsafe { Env::new(&lifetime, env) };
    let args = unsafe { std::slice::from_raw_parts(argv, argc as usize) };
    let finished = std::panic::catch_unwind(|| match args {
        // SAFETY: the terms are this call's arguments, valid in `env`.
        &[pending, data] => unsafe {
            finish_put(env, Term::new(env, pending), Term::new(env, data))
        },
        _ => Err(rustler::Error::BadArg),
    });
    match finished {
        Ok(Ok(term)) => term.as_c_arg(),
        // SAFETY: `env` is this call's environment.
        _ => unsafe { rustler::sys::enif_make_badarg(env.as_c_arg()) },
    }
}

fn finish_put<'a>(env: Env<'a>, pending: Term<'a>, data: Term<'a>) -> NifResult<Term<'a>> {
    let pending: ResourceArc<PendingPutResource> = pending.decode()?;
    let binary = match pending.source {
        Source::Copy(ptr, len) => {
            let data: Binary = data.decode()?;
            if (ptr, len) != (data.as_slice().as_ptr() as usize, data.len()) {
                return Err(rustler::Error::BadArg);
            }
            Ok(data)
        }
        Source::Fill(byte) if data.decode::<u8>()? == byte => Err(byte),
        Source::Fill(_) => return Err(rustler::Error::BadArg),
    };
    let taken = crate::accounting::unpoisoned(&pending.put).take();
    let mut put = taken.ok_or(rustler::Error::BadArg)?;
    let caller = env.pid();
    let mut since_check = put.written();
    let alive = || {
        since_check += binscope_core::store::buffer::COPY_STEP;
        if since_check < ALIVE_CHECK_BYTES {
            return true;
        }
        since_check = 0;
        env.is_process_alive(caller)
    };
    let complete = match binary {
        Ok(data) => put.copy_from(data.as_slice(), alive),
        Err(byte) => put.fill_with(byte, alive),
    };
    if !complete {
        return Ok(Err::<Term, _>(Reason(StoreError::Cancelled)).encode(env));
    }
    let blob = put.commit().expect("a complete write commits");
    Ok(Ok::<_, Reason>(to_binary(env, blob)).encode(env))
}

#[rustler::nif]
fn store_alloc<'a>(
    env: Env<'a>,
    size: u64,
    fill: u32,
    label: Term,
    owner: Term,
) -> StoreResult<'a> {
    let bytes = usize::try_from(size).unwrap_or(usize::MAX);
    let made = charged_estimate(env, bytes, || alloc(env, size, fill, label, owner));
    crate::release_backlog::yield_if_backlogged(env);
    made
}

#[rustler::nif(schedule = "DirtyCpu")]
fn store_alloc_dirty<'a>(
    env: Env<'a>,
    size: u64,
    fill: u32,
    label: Term,
    owner: Term,
) -> StoreResult<'a> {
    alloc(env, size, fill, label, owner)
}

#[rustler::nif]
fn store_intern<'a>(env: Env<'a>, data: Binary, label: Term, owner: Term) -> StoreResult<'a> {
    let made = charged(env, || intern(env, data, label, owner));
    crate::release_backlog::yield_if_backlogged(env);
    made
}

#[rustler::nif(schedule = "DirtyCpu")]
fn store_intern_dirty<'a>(env: Env<'a>, data: Binary, label: Term, owner: Term) -> StoreResult<'a> {
    intern(env, data, label, owner)
}

#[derive(NifMap)]
#[rustler(encode)]
struct LimitsMap {
    max_binary_size: u64,
    max_label_bytes: u64,
    max_labels: u64,
    copy_first_max: u64,
    errors: Vec<rustler::Atom>,
    caller_errors: Vec<rustler::Atom>,
}

/// The store's limits and error reasons, defined in `binscope_core` and read by
/// `Binscope.Store.limits/0` (so Elixir states and checks none of them itself).
#[rustler::nif]
fn store_limits() -> LimitsMap {
    let atoms = |f: fn(&StoreError) -> bool| {
        StoreError::ALL
            .iter()
            .filter(|e| f(e))
            .map(|&e| error::atom(e))
            .collect()
    };
    LimitsMap {
        max_binary_size: MAX_BINARY_SIZE,
        max_label_bytes: MAX_LABEL_BYTES as u64,
        max_labels: MAX_LABELS as u64,
        copy_first_max: COPY_FIRST_MAX,
        errors: atoms(|_| true),
        caller_errors: atoms(|e| e.is_caller_error()),
    }
}

rustler::atoms! { infinity }

/// `:infinity` or a byte count.
struct Capacity(Option<u64>);

impl Encoder for Capacity {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match self.0 {
            Some(c) => c.encode(env),
            None => infinity().encode(env),
        }
    }
}

#[derive(NifMap)]
#[rustler(encode)]
struct StatsMap {
    live_count: u64,
    live_bytes: u64,
    peak_bytes: u64,
    allocs: u64,
    frees: u64,
    capacity: Capacity,
    memory_limit: Capacity,
    reserved_bytes: u64,
    dedup_hits: u64,
    dedup_saved_bytes: u64,
    label_count: u64,
    owner_count: u64,
}

impl From<Stats> for StatsMap {
    fn from(s: Stats) -> Self {
        StatsMap {
            live_count: s.live_count,
            live_bytes: s.live_bytes,
            peak_bytes: s.peak_bytes,
            allocs: s.allocs,
            frees: s.frees,
            capacity: Capacity(s.capacity),
            memory_limit: Capacity(s.memory_limit),
            reserved_bytes: s.reserved_bytes,
            dedup_hits: s.dedup_hits,
            dedup_saved_bytes: s.dedup_saved_bytes,
            label_count: s.label_count,
            owner_count: s.owner_count,
        }
    }
}

#[rustler::nif]
fn store_stats(env: Env) -> StatsMap {
    charged(env, || REGISTRY.stats().into())
}

#[derive(NifMap)]
#[rustler(encode)]
struct LabelMap {
    count: u64,
    bytes: u64,
    peak_bytes: u64,
}

impl From<LabelStats> for LabelMap {
    fn from(s: LabelStats) -> Self {
        LabelMap {
            count: s.count,
            bytes: s.bytes,
            peak_bytes: s.peak_bytes,
        }
    }
}

/// `[{label, %{count, bytes, peak_bytes}}]`. Bounded by `MAX_LABELS`, so it stays short.
#[rustler::nif]
fn store_by_label(env: Env) -> Vec<(LabelTerm, LabelMap)> {
    charged(env, || {
        REGISTRY
            .by_label()
            .into_iter()
            .map(|(l, s)| (LabelTerm(l), s.into()))
            .collect()
    })
}

/// `[{pid, count, bytes, alive}]`: one per owner with live binaries. Dirty: it may be long.
#[rustler::nif(schedule = "DirtyCpu")]
fn store_by_owner() -> Vec<(LocalPid, u64, u64, bool)> {
    REGISTRY
        .by_owner()
        .into_iter()
        .map(
            |(
                pid,
                OwnerStats {
                    count,
                    bytes,
                    alive,
                },
            )| (pid.pid, count, bytes, alive),
        )
        .collect()
}

#[derive(NifMap)]
#[rustler(encode)]
struct LiveMap {
    id: u64,
    size: u64,
    label: LabelTerm,
    owner: LocalPid,
    owner_alive: bool,
    interned: bool,
    age_ms: u64,
}

impl From<LiveEntry<Owner>> for LiveMap {
    fn from(e: LiveEntry<Owner>) -> Self {
        LiveMap {
            id: e.id,
            size: e.size,
            label: LabelTerm(e.label),
            owner: e.owner.pid,
            owner_alive: e.owner_alive,
            interned: e.interned,
            age_ms: e.age.as_millis() as u64,
        }
    }
}

/// Live entries, oldest first. Dirty: it walks every live entry. The label filter comes wrapped
/// as `{label}` because `nil` is itself a valid (atom) label.
#[rustler::nif(schedule = "DirtyCpu")]
fn store_live<'a>(
    env: Env<'a>,
    label: Option<(Term<'a>,)>,
    owner: Option<LocalPid>,
    older_than_ms: Option<u64>,
    limit: Option<u64>,
) -> NifResult<Vec<LiveMap>> {
    let filter = LiveFilter {
        label: label.map(|(l,)| label::decode(l)).transpose()?,
        owner: owner.map(|pid| Owner::new(env, pid)),
        older_than: older_than_ms.map(Duration::from_millis),
        limit: limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
    };
    Ok(REGISTRY.live(&filter).into_iter().map(Into::into).collect())
}

/// `nil` removes the capacity.
#[rustler::nif]
fn store_set_capacity(env: Env, capacity: Option<u64>) -> rustler::types::atom::Atom {
    charged(env, || REGISTRY.set_capacity(capacity));
    rustler::types::atom::ok()
}
