//! Runtime errors returned as `{:error, reason}`; the reason is an atom.

use binscope_core::StoreError;
use rustler::{Encoder, Env, Term};

#[derive(Debug, Clone, Copy)]
pub enum NifError {
    Store(StoreError),
    /// The owner process is not alive; Elixir raises `ArgumentError` for it.
    DeadOwner,
}

impl From<StoreError> for NifError {
    fn from(e: StoreError) -> Self {
        NifError::Store(e)
    }
}

impl Encoder for NifError {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        let name = match self {
            NifError::Store(e) => e.name(),
            NifError::DeadOwner => "dead_owner",
        };
        // The names are fixed at compile time, so the atom table cannot grow from user input.
        rustler::types::atom::Atom::from_str(env, name)
            .map(|a| a.encode(env))
            .unwrap_or_else(|_| name.encode(env))
    }
}
