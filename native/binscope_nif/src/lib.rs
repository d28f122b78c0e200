//! Binscope's NIF: a thin rustler shell over `binscope_core`.
//!
//! One Rust module per Elixir area, mirroring the Elixir modules that call it:
//! - `store` <-> `Binscope.Store` (NIFs prefixed `store_`)
//! - `accounting` <-> `Binscope.Accounting` / `Binscope.Leaks` (NIFs prefixed `accounting_`)
//! - `report` <-> `Binscope.Report` (NIFs prefixed `report_`)
//! - `allocator` <-> `Binscope.Store.allocator/0` (NIFs prefixed `allocator_`)
//! - `gc_pressure` <-> `Binscope.Store.GcPressure` (NIFs prefixed `gc_pressure_`)
//!
//! Every NIF is a stub in the hidden Elixir module `Binscope.Native`.

// jemalloc owns every native byte, so its statistics describe exactly what the NIF holds.
// `disable_initial_exec_tls` is required for a library loaded with dlopen (see PLATFORM.md).
// `system_alloc` (sanitizer builds only, scripts/sanitize.sh): the system allocator, so
// AddressSanitizer sees every native buffer; `allocator_stats` then reads an unused jemalloc.
#[cfg(not(feature = "system_alloc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc options, read once at start-up. `oversize_threshold:0` keeps large buffers (>= 8 MiB)
/// in the normal arenas: by default they go to a dedicated arena that returns their pages to the
/// OS at once, so every 16 MiB put faulted in 4096 fresh pages (measured: 0.39x the speed of
/// `:binary.copy` in a steady put/drop cycle). Freed pages now stay for jemalloc's usual decay
/// (10 s) and show in `allocator().resident` meanwhile.
#[cfg(not(feature = "system_alloc"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"oversize_threshold:0\0";

mod accounting;
mod allocator;
mod error;
mod gc_pressure;
mod label;
mod report;
mod store;
mod timeslice;

rustler::init!("Elixir.Binscope.Native", load = load);

fn load(env: rustler::Env, _info: rustler::Term) -> bool {
    store::on_load(env)
}
