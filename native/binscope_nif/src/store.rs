//! NIFs of `Binscope.Store`: term conversion, scheduler choice and resource lifetimes only; the
//! accounting rules live in `binscope_core::store`.
//!
//! Every stored binary reaches Elixir as a resource binary: a real refc binary (ProcBin) whose
//! bytes are the core's native buffer, with no copy. The VM drops the `StoreBinary` resource when
//! the last ProcBin is garbage-collected, which drops the `Arc<Blob>` and releases the entry.
//!
//! Copies and fills have two NIFs each: a normal one for small sizes and a `_dirty` one that runs
//! on a dirty CPU scheduler; `Binscope.Store` picks by size (threshold measured, see its docs).

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use binscope_core::accounting::HandleIndex;
use binscope_core::store::{
    Blob, LabelStats, LiveEntry, LiveFilter, OwnerState, OwnerStats, Registry, Stats,
};
use rustler::{
    Binary, Encoder, Env, LocalPid, Monitor, NifMap, NifResult, Resource, ResourceArc, Term,
};

use crate::error::NifError;
use crate::label::{self, LabelTerm};
use crate::timeslice::charged;

/// The node-wide registry. It lives as long as the library is loaded. Payloads are admitted only
/// while the process has room for them and a headroom (see `space`).
pub static REGISTRY: LazyLock<Registry<LocalPid>> =
    LazyLock::new(|| Registry::with_space_probe(crate::space::available));

/// The resource behind each stored binary handed to Elixir.
pub struct StoreBinary(Arc<Blob<LocalPid>>);

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

    fn down<'a>(&'a self, _env: Env<'a>, pid: LocalPid, _monitor: Monitor) {
        REGISTRY.owner_down(&pid);
    }
}

pub fn on_load(_env: Env) -> bool {
    REGISTRY.set_memory_limit(machine_memory_limit());
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

type StoreResult<'a> = NifResult<Result<Term<'a>, NifError>>;

/// Makes sure `owner` is monitored; `Err` when it is not alive.
fn track_owner(env: Env, owner: LocalPid) -> Result<(), NifError> {
    match REGISTRY.watch_owner(&owner) {
        OwnerState::Alive => Ok(()),
        OwnerState::Dead => Err(NifError::DeadOwner),
        OwnerState::New => {
            let watcher = WATCHER.get_or_init(|| ResourceArc::new(OwnerWatch));
            if watcher.monitor(Some(env), &owner).is_some() {
                Ok(())
            } else {
                REGISTRY.owner_down(&owner);
                Err(NifError::DeadOwner)
            }
        }
    }
}

/// Wraps a blob in a fresh resource and returns it as a refc binary (zero copy).
fn to_binary<'a>(env: Env<'a>, blob: Arc<Blob<LocalPid>>) -> Term<'a> {
    let (id, size) = (blob.id(), blob.len() as u64);
    let resource = ResourceArc::new(StoreBinary(blob));
    crate::gc_pressure::charge(&resource, size as usize);
    HANDLES.insert(resource.addr(), id, size);
    resource.make_binary(env, |r| r.0.bytes()).to_term(env)
}

fn put<'a>(env: Env<'a>, data: Binary, label: Term, owner: LocalPid) -> StoreResult<'a> {
    let label = label::decode(label)?;
    Ok(track_owner(env, owner)
        .and_then(|()| Ok(REGISTRY.put(data.as_slice(), label, owner)?))
        .map(|blob| to_binary(env, blob)))
}

/// `fill` arrives as `u32` because rustler's `u8` decoder truncates (256 would become 0).
/// A long fill stops (`{:error, :cancelled}`, nothing counted) as soon as the caller is dead.
fn alloc<'a>(env: Env<'a>, size: u64, fill: u32, label: Term, owner: LocalPid) -> StoreResult<'a> {
    let fill = u8::try_from(fill).map_err(|_| rustler::Error::BadArg)?;
    let label = label::decode(label)?;
    let caller = env.pid();
    let caller_alive = || env.is_process_alive(caller);
    Ok(track_owner(env, owner)
        .and_then(|()| Ok(REGISTRY.alloc_until(size, fill, label, owner, caller_alive)?))
        .map(|blob| to_binary(env, blob)))
}

/// Returns `{:ok, {binary, hit?}}`.
fn intern<'a>(env: Env<'a>, data: Binary, label: Term, owner: LocalPid) -> StoreResult<'a> {
    let label = label::decode(label)?;
    Ok(track_owner(env, owner)
        .and_then(|()| Ok(REGISTRY.intern(data.as_slice(), label, owner)?))
        .map(|i| (to_binary(env, i.blob), i.hit).encode(env)))
}

#[rustler::nif]
fn store_put<'a>(env: Env<'a>, data: Binary, label: Term, owner: LocalPid) -> StoreResult<'a> {
    charged(env, || put(env, data, label, owner))
}

#[rustler::nif(schedule = "DirtyCpu")]
fn store_put_dirty<'a>(
    env: Env<'a>,
    data: Binary,
    label: Term,
    owner: LocalPid,
) -> StoreResult<'a> {
    put(env, data, label, owner)
}

#[rustler::nif]
fn store_alloc<'a>(
    env: Env<'a>,
    size: u64,
    fill: u32,
    label: Term,
    owner: LocalPid,
) -> StoreResult<'a> {
    charged(env, || alloc(env, size, fill, label, owner))
}

#[rustler::nif(schedule = "DirtyCpu")]
fn store_alloc_dirty<'a>(
    env: Env<'a>,
    size: u64,
    fill: u32,
    label: Term,
    owner: LocalPid,
) -> StoreResult<'a> {
    alloc(env, size, fill, label, owner)
}

#[rustler::nif]
fn store_intern<'a>(env: Env<'a>, data: Binary, label: Term, owner: LocalPid) -> StoreResult<'a> {
    charged(env, || intern(env, data, label, owner))
}

#[rustler::nif(schedule = "DirtyCpu")]
fn store_intern_dirty<'a>(
    env: Env<'a>,
    data: Binary,
    label: Term,
    owner: LocalPid,
) -> StoreResult<'a> {
    intern(env, data, label, owner)
}

/// `:infinity` or a byte count.
struct Capacity(Option<u64>);

impl Encoder for Capacity {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match self.0 {
            Some(c) => c.encode(env),
            None => rustler::types::atom::Atom::from_str(env, "infinity")
                .map(|a| a.encode(env))
                .unwrap_or_else(|_| "infinity".encode(env)),
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
            )| (pid, count, bytes, alive),
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

impl From<LiveEntry<LocalPid>> for LiveMap {
    fn from(e: LiveEntry<LocalPid>) -> Self {
        LiveMap {
            id: e.id,
            size: e.size,
            label: LabelTerm(e.label),
            owner: e.owner,
            owner_alive: e.owner_alive,
            interned: e.interned,
            age_ms: e.age.as_millis() as u64,
        }
    }
}

/// Live entries, oldest first. Dirty: it walks every live entry. The label filter comes wrapped
/// as `{label}` because `nil` is itself a valid (atom) label.
#[rustler::nif(schedule = "DirtyCpu")]
fn store_live(
    label: Option<(Term,)>,
    owner: Option<LocalPid>,
    older_than_ms: Option<u64>,
    limit: Option<u64>,
) -> NifResult<Vec<LiveMap>> {
    let filter = LiveFilter {
        label: label.map(|(l,)| label::decode(l)).transpose()?,
        owner,
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
