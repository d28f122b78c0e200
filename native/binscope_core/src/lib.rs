//! Binscope's pure core: everything that can be decided without a running BEAM.
//!
//! - [`store`]: the registry of native binaries (exact live/peak accounting per label and owner,
//!   content-addressed dedup, a hard capacity that holds under concurrency).
//! - [`accounting`]: attribution of shared binaries to processes (naive, USS, PSS; each binary
//!   counted once) and the index that resolves store resource binaries to their real size.
//! - [`leaks`]: what forced collections gave back, exactly, and what to change.
//! - [`render`]: JSON rendering of reports (serde_json).
//! - [`error`]: the one error enum of this crate, mapped to `{:error, reason}` by the NIF.
//!
//! The NIF crate only converts terms, picks schedulers and ties resource lifetimes to
//! [`store::Blob`]s; every rule about counting lives here and is tested here.

pub mod accounting;
pub mod error;
pub mod leaks;
pub mod render;
pub mod store;

pub use error::StoreError;
