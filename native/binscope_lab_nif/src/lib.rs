//! The lab's NIF: what the demos and benchmarks need and an app never does, kept out of
//! `binscope_nif` so that an app's release carries no chart code (plotters).
//!
//! - `chart` <-> `Binscope.Chart` (NIFs prefixed `chart_`)
//! - `floor` <-> `Binscope.Bench.Suite.StoreVm`'s memcpy floor (NIFs prefixed `floor_`)
//!
//! Every NIF is a stub in the hidden Elixir module `Binscope.Lab.Native` (mix_project/lab/).

mod chart;
mod floor;

rustler::init!("Elixir.Binscope.Lab.Native");
