//! The store's errors as terms: `{:error, reason}` with `reason` one of the atoms below, one per
//! `binscope_core::StoreError` variant (its `name()`), made by `rustler::atoms!` so no atom is
//! ever created from anything but this list.

use binscope_core::StoreError;
use rustler::{Atom, Encoder, Env, Term};

rustler::atoms! {
    capacity,
    alloc_failed,
    too_large,
    label_too_long,
    label_limit,
    cancelled,
    dead_owner,
}

/// A store error on its way to Elixir (the reason of `{:error, reason}`).
#[derive(Debug, Clone, Copy)]
pub struct Reason(pub StoreError);

impl From<StoreError> for Reason {
    fn from(e: StoreError) -> Self {
        Reason(e)
    }
}

/// The atom of `e`.
pub fn atom(e: StoreError) -> Atom {
    match e {
        StoreError::Capacity => capacity(),
        StoreError::AllocFailed => alloc_failed(),
        StoreError::TooLarge => too_large(),
        StoreError::LabelTooLong => label_too_long(),
        StoreError::LabelLimit => label_limit(),
        StoreError::Cancelled => cancelled(),
        StoreError::DeadOwner => dead_owner(),
    }
}

impl Encoder for Reason {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        atom(self.0).encode(env)
    }
}
