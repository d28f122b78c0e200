//! The registry of native binaries.
//!
//! A [`Registry`] hands out [`Blob`]s: immutable native buffers whose last reference, when dropped,
//! removes the entry from every counter. The NIF wraps each `Arc<Blob>` in a VM resource, so the VM's
//! garbage collector decides when that happens and the counters stay exact.
//!
//! What is counted: every live native allocation once (`live_count`, `live_bytes`), per label and
//! per owner, with high-water marks. Interned (deduplicated) content is one allocation however many
//! holders it has; each extra holder is a `dedup_hit` and `dedup_saved_bytes`.

mod blob;
pub mod buffer;
mod label;
mod registry;
mod stats;

pub use blob::Blob;
pub use label::Label;
pub use registry::{Interned, OwnerState, Registry};
pub use stats::{LabelStats, LiveEntry, LiveFilter, OwnerStats, Stats};

use std::hash::Hash;

/// Largest binary the store accepts (1 TiB). Anything above is a caller error, not an allocation
/// attempt: no machine this runs on has that much memory.
pub const MAX_BINARY_SIZE: u64 = 1 << 40;

/// Longest label in bytes (the VM's own limit for an atom's text is 255 characters).
pub const MAX_LABEL_BYTES: usize = 255;

/// Most distinct labels with live entries at once (the default label is always allowed on top);
/// protects the node from unbounded label churn. Labels whose last entry is gone are reclaimed,
/// so only live labels count.
///
/// Under Miri (about 1000x slower) it is 1,024, so the test that fills the table still runs there.
pub const MAX_LABELS: usize = if cfg!(miri) { 1_024 } else { 65_536 };

/// What identifies the process that owns a binary. The NIF uses a local pid; tests use integers.
pub trait Owner: Clone + Eq + Hash + Send + Sync + 'static {}
impl<T: Clone + Eq + Hash + Send + Sync + 'static> Owner for T {}
