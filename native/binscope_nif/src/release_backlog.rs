//! Ends the caller's time slice when the store's release backlog is full (the rule and why:
//! `binscope_core::store::release_backlog`).

use rustler::Env;

pub use binscope_core::store::release_backlog::{made, released};

/// For normal-scheduler NIFs, after they made their binaries (a dirty call already switches its
/// caller out of its normal scheduler, and that switch runs the queued destructors).
pub fn yield_if_backlogged(env: Env) {
    if binscope_core::store::release_backlog::should_yield() {
        rustler::schedule::consume_timeslice(env, 100);
    }
}
