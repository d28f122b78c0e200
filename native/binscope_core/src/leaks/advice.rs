//! One suggestion per process, chosen from its own figures, with the reason spelled out.

/// A process's figures after its forced collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// Bytes its collection gave back.
    pub reclaimed_bytes: u64,
    /// Binary bytes it still holds after the collection (each binary once).
    pub retained_binary_bytes: u64,
    /// Binaries it still holds after the collection.
    pub retained_binaries: u64,
    /// Its heap and stack in bytes after the collection.
    pub heap_bytes: u64,
    pub message_queue_len: u64,
    /// Reductions it ran between the snapshot and the collection (0 = idle).
    pub reductions_delta: u64,
    /// It runs an OTP behaviour loop (gen_server, gen_statem, ...) that takes `hibernate_after`.
    pub otp_behaviour: bool,
    pub fullsweep_after: u64,
    pub minor_gcs: u64,
}

/// What to change, one of the remedies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suggestion {
    /// Start the OTP process with `hibernate_after: ms`.
    HibernateAfter,
    /// Hibernate (`:erlang.hibernate/3`, `:proc_lib.hibernate/3`) in the idle path of its loop.
    HibernateIdle,
    /// Spawn it with a low `fullsweep_after`, so old-heap binaries are swept sooner.
    FullsweepAfter,
    /// `:binary.copy/1` the small slices it keeps: they pin large parents.
    BinaryCopy,
    /// Spawn it with `message_queue_data: :off_heap`.
    OffHeapQueue,
    /// Nothing worth changing.
    None,
}

impl Suggestion {
    pub fn name(self) -> &'static str {
        match self {
            Suggestion::HibernateAfter => "hibernate_after",
            Suggestion::HibernateIdle => "hibernate_idle",
            Suggestion::FullsweepAfter => "fullsweep_after",
            Suggestion::BinaryCopy => "binary_copy",
            Suggestion::OffHeapQueue => "off_heap_queue",
            Suggestion::None => "none",
        }
    }
}

/// Mailboxes longer than this get the off-heap advice.
pub const LONG_QUEUE: u64 = 1_000;
/// Reductions between snapshot and collection under which a process counts as idle.
pub const IDLE_REDUCTIONS: u64 = 1_000;
/// Retained binaries this much larger than the heap point at slices pinning parents.
pub const PINNED_RATIO: u64 = 16;
pub const PINNED_MIN_BYTES: u64 = 1 << 20;

/// Picks a suggestion and explains it with the process's own numbers.
pub fn suggest(f: &Facts) -> (Suggestion, String) {
    if f.message_queue_len >= LONG_QUEUE {
        return (
            Suggestion::OffHeapQueue,
            format!(
                "{} messages queued: every GC scans them and their binaries; with message_queue_data: :off_heap they stay outside the heap",
                f.message_queue_len
            ),
        );
    }
    if f.retained_binary_bytes >= PINNED_MIN_BYTES
        && f.retained_binary_bytes >= PINNED_RATIO.saturating_mul(f.heap_bytes.max(1))
        && f.reclaimed_bytes < f.retained_binary_bytes
    {
        return (
            Suggestion::BinaryCopy,
            format!(
                "after a full GC it still holds {} bytes in {} binaries against a {}-byte heap; if what it keeps are small slices (sub-binaries) of those binaries, each slice keeps its whole parent alive: :binary.copy/1 the slices it keeps",
                f.retained_binary_bytes, f.retained_binaries, f.heap_bytes
            ),
        );
    }
    if f.reclaimed_bytes == 0 {
        return (
            Suggestion::None,
            "a full GC freed no binary bytes".to_string(),
        );
    }
    if f.reductions_delta < IDLE_REDUCTIONS {
        let (s, how) = if f.otp_behaviour {
            (
                Suggestion::HibernateAfter,
                "start it with hibernate_after: 1_000 (ms)",
            )
        } else {
            (
                Suggestion::HibernateIdle,
                "hibernate in its idle path (:erlang.hibernate/3)",
            )
        };
        return (
            s,
            format!(
                "idle ({} reductions since the snapshot) while holding {} bytes only a GC would free; {}",
                f.reductions_delta, f.reclaimed_bytes, how
            ),
        );
    }
    (
        Suggestion::FullsweepAfter,
        format!(
            "busy ({} reductions since the snapshot, {} minor GCs) yet a full GC freed {} bytes: binaries age into the old heap and wait for a fullsweep (fullsweep_after is {}); spawn it with fullsweep_after: 10",
            f.reductions_delta, f.minor_gcs, f.reclaimed_bytes, f.fullsweep_after
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_fires_on_its_figures() {
        let idle_gs = Facts {
            reclaimed_bytes: 10 << 20,
            otp_behaviour: true,
            ..Facts::default()
        };
        assert_eq!(suggest(&idle_gs).0, Suggestion::HibernateAfter);
        assert!(suggest(&idle_gs).1.contains("10485760"));
        let idle_raw = Facts {
            otp_behaviour: false,
            ..idle_gs
        };
        assert_eq!(suggest(&idle_raw).0, Suggestion::HibernateIdle);
        let busy = Facts {
            reductions_delta: 50_000,
            ..idle_gs
        };
        assert_eq!(suggest(&busy).0, Suggestion::FullsweepAfter);
        let queue = Facts {
            message_queue_len: 5_000,
            ..idle_gs
        };
        assert_eq!(suggest(&queue).0, Suggestion::OffHeapQueue);
        let pinned = Facts {
            reclaimed_bytes: 0,
            retained_binary_bytes: 8 << 20,
            retained_binaries: 4,
            heap_bytes: 4096,
            ..Facts::default()
        };
        assert_eq!(suggest(&pinned).0, Suggestion::BinaryCopy);
        assert_eq!(suggest(&Facts::default()).0, Suggestion::None);
    }
}
