//! Process memory accounting: who holds which off-heap binaries, counted once.
//!
//! - [`attribution`]: turns every process's list of binary references (`process_info(pid, :binary)`)
//!   into per-process naive bytes, USS and PSS, plus node-wide totals where each binary counts once.
//! - [`handles`]: maps the addresses the VM shows for NIF resource binaries back to the store
//!   entries behind them, so store binaries are counted at their real size instead of the 72 bytes
//!   the VM reports.
//! - [`top`]: the largest few of a whole node's figures, without a sort of them all.

pub mod attribution;
pub mod handles;
pub(crate) mod key_index;
pub mod top;

pub use attribution::{
    attribute, attribute_each, attribute_parallel, Attribution, BinRef, ProcessShare, SharedBinary,
    Snapshot, Summary,
};
pub use handles::{Handle, HandleIndex, Resolution};

pub(crate) use attribution::AddrHasher;

/// Keys at or above this value name store entries (`STORE_KEY_BASE + entry id`); keys below are
/// binary addresses as the VM reports them (user-space addresses are far below 2^62).
pub const STORE_KEY_BASE: u64 = 1 << 62;

/// Keys at or above this value mark binaries that may be store binaries but could not be
/// identified (see [`handles`]): `UNRESOLVED_KEY_BASE | listed address`. Attribution leaves them
/// out of every byte figure and counts them as `unresolved`.
pub const UNRESOLVED_KEY_BASE: u64 = 1 << 63;

/// The attribution key of a store entry.
pub fn store_key(entry_id: u64) -> u64 {
    STORE_KEY_BASE | entry_id
}

/// The store entry id named by `key`, if it names one.
pub fn store_entry(key: u64) -> Option<u64> {
    (STORE_KEY_BASE..UNRESOLVED_KEY_BASE)
        .contains(&key)
        .then_some(key & !STORE_KEY_BASE)
}

/// The key of an unresolved binary listed at `addr`.
pub fn unresolved_key(addr: u64) -> u64 {
    UNRESOLVED_KEY_BASE | addr
}

/// Whether `key` marks an unresolved binary.
pub fn is_unresolved(key: u64) -> bool {
    key >= UNRESOLVED_KEY_BASE
}
