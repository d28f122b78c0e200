//! The binary-leak finder's rules: which processes to collect, what a collection gave back, and
//! what to change. The VM side (the collector) only gathers lists and forces the collections.
//!
//! - [`reclaim`]: from binary lists taken before and after forcing GCs, the bytes actually freed,
//!   each binary counted once and split exactly among the processes that let it go.
//! - [`rank`]: before any GC, which processes hold binaries only a forced GC would free soon.
//! - [`advice`]: one suggestion per process, with the reason in the process's own figures.
//! - [`select`]: the few processes a whole-node scan reports, chosen without a record per process.

pub mod advice;
pub mod rank;
pub mod reclaim;
pub mod select;

pub use advice::{pinned_bytes, suggest, waste, Facts, Suggestion};
pub use rank::{likely_garbage, rank, Candidate};
pub use reclaim::{reclaimed, Reclaim};
pub use select::{full_ranking, top_by, FullRow};
