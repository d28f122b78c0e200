//! The crate's single error enum. Each variant has a stable snake_case name, which is the atom the
//! Elixir side receives in `{:error, reason}`.

use std::fmt;

/// Why a store operation did not happen. In every case nothing was allocated or counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreError {
    /// The allocation would take live plus in-flight bytes over the configured capacity, or over
    /// the memory limit (what the machine or its cgroup can back, see
    /// [`crate::store::Registry::set_memory_limit`]).
    Capacity,
    /// The allocator refused the request (out of memory, or a size it cannot map).
    AllocFailed,
    /// The size is above [`crate::store::MAX_BINARY_SIZE`]; treated as a caller error.
    TooLarge,
    /// A label is longer than [`crate::store::MAX_LABEL_BYTES`]; treated as a caller error.
    LabelTooLong,
    /// The store already tracks [`crate::store::MAX_LABELS`] distinct labels.
    LabelLimit,
    /// A long fill was stopped because its caller went away (nobody can receive the result).
    Cancelled,
    /// The owner process is not alive (a monitored owner, see
    /// [`crate::store::Registry::put_watched`]); treated as a caller error.
    DeadOwner,
}

impl StoreError {
    /// The stable name used as the Elixir reason atom.
    pub fn name(self) -> &'static str {
        match self {
            StoreError::Capacity => "capacity",
            StoreError::AllocFailed => "alloc_failed",
            StoreError::TooLarge => "too_large",
            StoreError::LabelTooLong => "label_too_long",
            StoreError::LabelLimit => "label_limit",
            StoreError::Cancelled => "cancelled",
            StoreError::DeadOwner => "dead_owner",
        }
    }

    /// Errors that mean the caller passed a bad argument (raised as `ArgumentError`), as opposed to
    /// runtime conditions returned as `{:error, reason}`.
    pub fn is_caller_error(self) -> bool {
        matches!(
            self,
            StoreError::TooLarge | StoreError::LabelTooLong | StoreError::DeadOwner
        )
    }

    /// Every variant, in declaration order (what the NIF exports to Elixir).
    pub const ALL: [StoreError; 7] = [
        StoreError::Capacity,
        StoreError::AllocFailed,
        StoreError::TooLarge,
        StoreError::LabelTooLong,
        StoreError::LabelLimit,
        StoreError::Cancelled,
        StoreError::DeadOwner,
    ];
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for StoreError {}
