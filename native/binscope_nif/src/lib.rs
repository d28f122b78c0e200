//! Binscope's NIF: a thin rustler shell over `binscope_core`.
//!
//! One Rust module per Elixir area, mirroring the Elixir modules that call it:
//! - `store` <-> `Binscope.Store` (NIFs prefixed `store_`)
//! - `allocator` <-> `Binscope.Store.allocator/0` (NIFs prefixed `allocator_`)
//!
//! Every NIF is a stub in the hidden Elixir module `Binscope.Native`.

// jemalloc owns every native byte, so its statistics describe exactly what the NIF holds.
// `disable_initial_exec_tls` is required for a library loaded with dlopen (see PLATFORM.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod allocator;
mod error;
mod label;
mod store;
mod timeslice;

rustler::init!("Elixir.Binscope.Native", load = load);

fn load(env: rustler::Env, _info: rustler::Term) -> bool {
    store::on_load(env)
}
