//! Binscope's NIF: a thin rustler shell over `binscope_core`.
//!
//! One Rust module per Elixir area, mirroring the Elixir modules that call it:
//! - `store` <-> `Binscope.Store` (NIFs prefixed `store_`)
//! - `collector` <-> `:binscope_collector`, the target side of a scan: it runs on the inspected
//!   node (NIFs prefixed `collector_`: probe, mark, resolve, live store keys)
//! - `accounting` <-> `Binscope.Accounting`, on the calling node (NIFs prefixed `accounting_`)
//! - `leaks` <-> `Binscope.Leaks`, on the calling node (NIFs prefixed `leaks_`)
//! - `render` <-> `Binscope.Render.JSON` (NIFs prefixed `render_`)
//! - `allocator` <-> `Binscope.Store.allocator/0` (NIFs prefixed `allocator_`)
//! - `gc_pressure` <-> `Binscope.Store.GcPressure` (NIFs prefixed `gc_pressure_`)
//!
//! Every NIF is a stub in the hidden Elixir module `Binscope.Native`.

// jemalloc owns every native byte, so its statistics describe exactly what the NIF holds.
// `disable_initial_exec_tls` is required for a library loaded with dlopen (see the README,
// "Platform facts learned building it").
// `system_alloc` (sanitizer builds only, scripts/sanitize.sh): the system allocator, so
// AddressSanitizer sees every native buffer; `allocator_stats` then reads an unused jemalloc.
#[cfg(not(feature = "system_alloc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc options, read once at start-up.
///
/// `oversize_threshold:1099511627776` (1 TiB, the store's largest binary) keeps every buffer in
/// the normal arenas, freed pages kept for jemalloc's usual decay (10 s, shown in
/// `allocator().resident` meanwhile). By default buffers of 8 MiB and more go to a dedicated
/// arena that returns their pages to the OS at every free, so each 16 MiB put faulted in 4096
/// fresh pages. `oversize_threshold:0`, which was here before, does not do what it seems: it
/// disables the dedicated arena, but arena 0 was created before the options were read and keeps
/// the 8 MiB threshold, under which it purges every freed extent of 8 MiB or more at once. Seen
/// in a put/drop loop of 16 MiB in one thread (arena 0): 4096 page faults a put and 25-44 ms
/// a put with `0`, 270 faults a put with 1 TiB (jemalloc 5.3.1, `src/arena.c`
/// `arena_init_huge` and `src/extent.c` `extent_record`). In the VM it hits the threads jemalloc
/// puts on arena 0 (a 16 MiB put loop on OTP 25 measured about 290 faults a put either way, so
/// its dirty schedulers were elsewhere there).
///
/// `retain:false`: purged pages are unmapped rather than kept as "retained" address space, and
/// jemalloc maps what an extent needs instead of growing its mappings geometrically (by default
/// each 256 MiB allocation mapped 350-520 MB more). Under an address-space limit that keeps the
/// process's mapped size close to what is in use, which the store's admission reads (see `space`).
#[cfg(not(feature = "system_alloc"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"oversize_threshold:1099511627776,retain:false\0";

mod accounting;
mod allocator;
mod collector;
mod error;
mod gc_pressure;
mod label;
mod leaks;
mod release_backlog;
mod render;
mod space;
mod store;
mod timeslice;

// The library's entry point, written out instead of `rustler::init!` (which it follows) for two
// things that macro cannot do: an upgrade callback, and one entry per copy of the library.
//
// The library is linked with `-z nodelete` (build.rs), so purging `Binscope.Native` and loading
// it again reuses this copy: the registry, the allocator and rustler's table of resource types
// are the ones before. That table then has to be right for the new module instance:
// - Resource types are registered again at each load and upgrade, under names that alternate
//   between two sets (`register_resources`). A type belongs to the instance that opened
//   it; an upgrade cannot open a name the current instance holds, and the old instance's types
//   are freed (or orphaned, while its resources live) once it is purged, so the table must point
//   at the new ones, never at those.
// - An upgrade (`:code.load_file` or IEx `r/1` over loaded code) is accepted only from this same
//   copy, recognised by its private data pointing at `INSTANCE`. A different build of the
//   library has its own registry and allocator: its new resources would be counted in the wrong
//   registry and freed by the wrong allocator, so it is refused and the old code stays current.
//
// The function table is built once per copy (rustler's macro leaked a new one at every load).

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use rustler::codegen_runtime::{c_int, ErlNifEntry, ResourceRegistration as Registration};
use rustler::sys::{ErlNifEnv, ErlNifTerm};

/// What this copy's module instances carry as private data.
static INSTANCE: u8 = 0;

fn instance() -> *mut c_void {
    &INSTANCE as *const u8 as *mut c_void
}

struct Entry(ErlNifEntry);
// SAFETY: the entry is written once and only read after; its pointers are to 'static data.
unsafe impl Sync for Entry {}
unsafe impl Send for Entry {}

static ENTRY: OnceLock<Entry> = OnceLock::new();

/// # Safety
/// Called by the VM when it loads the library.
#[no_mangle]
pub unsafe extern "C" fn nif_init() -> *const ErlNifEntry {
    rustler::codegen_runtime::internal_write_symbols();
    &ENTRY
        .get_or_init(|| {
            let funcs: Box<[_]> = rustler::codegen_runtime::inventory::iter::<rustler::Nif>()
                .map(rustler::Nif::get_def)
                .collect();
            let mut entry = ErlNifEntry::new(c"Elixir.Binscope.Native", Box::leak(funcs), load);
            entry.upgrade = Some(upgrade);
            Entry(entry)
        })
        .0
}

unsafe extern "C" fn load(
    env: *mut ErlNifEnv,
    priv_data: *mut *mut c_void,
    _info: ErlNifTerm,
) -> c_int {
    *priv_data = instance();
    start(env)
}

unsafe extern "C" fn upgrade(
    env: *mut ErlNifEnv,
    priv_data: *mut *mut c_void,
    old_priv_data: *mut *mut c_void,
    _info: ErlNifTerm,
) -> c_int {
    if *old_priv_data != instance() {
        // A different copy of the library is current (see above): refuse.
        return 1;
    }
    *priv_data = instance();
    start(env)
}

/// 0 when loaded, as the VM wants it.
unsafe fn start(env: *mut ErlNifEnv) -> c_int {
    let ok = std::panic::catch_unwind(|| {
        let env = rustler::Env::new_init_env(&env, env);
        register_resources(env) && store::on_load(env)
    });
    c_int::from(!matches!(ok, Ok(true)))
}

/// Which of the two sets of resource type names the current module instance holds.
static NAMES_IN_USE: AtomicUsize = AtomicUsize::new(1);

/// Opens this module instance's resource types (see above for why at each load and upgrade):
/// every type rustler collected (`#[rustler::resource_impl]`), under the set of names the current
/// instance does not hold. rustler's table then points at them. If the first name were taken,
/// nothing is recorded; the names of one set are all free or all taken together.
fn register_resources(env: rustler::Env) -> bool {
    // Built once per copy of the library (the names must be 'static): the collected list is
    // fixed for a copy, so index i is always the same type.
    static NAMES: OnceLock<Vec<[&'static str; 2]>> = OnceLock::new();
    let collected: Vec<&'static Registration> =
        rustler::codegen_runtime::inventory::iter::<Registration>().collect();
    let names = NAMES.get_or_init(|| {
        let name = |i: usize, set: usize| -> &'static str {
            Box::leak(format!("Binscope.Native.resource{i}.{set}").into_boxed_str())
        };
        (0..collected.len())
            .map(|i| [name(i, 0), name(i, 1)])
            .collect()
    });
    let set = 1 - NAMES_IN_USE.load(Ordering::Relaxed);
    let ok = collected.iter().zip(names).all(|(reg, names)| {
        // SAFETY: a Registration is plain data (function pointers, a name, the callbacks'
        // init struct) with no Drop: a bitwise copy is an independent, valid value.
        let copy: Registration = unsafe { std::ptr::read(*reg) };
        copy.with_name(names[set]).register(env).is_ok()
    });
    if ok {
        NAMES_IN_USE.store(set, Ordering::Relaxed);
    }
    ok
}
