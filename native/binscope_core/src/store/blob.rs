//! One native allocation tracked by a registry.

use std::fmt;
use std::sync::Arc;

use super::buffer::Payload;
use super::registry::Shared;
use super::Owner;

/// An immutable native buffer. Dropping the last `Arc<Blob>` releases its accounting entry.
pub struct Blob<O: Owner> {
    pub(super) id: u64,
    pub(super) data: Payload,
    pub(super) shared: Arc<Shared<O>>,
}

impl<O: Owner> Blob<O> {
    /// The registry-wide id of this allocation (ids grow with creation order).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl<O: Owner> Drop for Blob<O> {
    fn drop(&mut self) {
        self.shared.release(self.id);
    }
}

impl<O: Owner> fmt::Debug for Blob<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blob")
            .field("id", &self.id)
            .field("len", &self.data.len())
            .finish()
    }
}
