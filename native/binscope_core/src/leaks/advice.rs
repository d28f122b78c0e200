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
    /// One of OTP's own processes (`code_server`, `erl_prim_loader`, `user`, `init`, ...):
    /// nothing a user can change in it, so no advice.
    pub system_process: bool,
    /// Blocked in a passive receive (`gen_tcp:recv`, `prim_inet:recv*`): it cannot hibernate there.
    pub passive_recv: bool,
    /// Its message queue is kept off the heap (`message_queue_data: :off_heap`): binaries in
    /// those messages are not in `process_info(pid, :binary)`, so none of its figures count them.
    pub off_heap_queue: bool,
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

/// The binary bytes it keeps after a full GC that look held only through small slices of large
/// parents: what it retains beyond its own heap, when that is at least [`PINNED_MIN_BYTES`] and
/// [`PINNED_RATIO`] times the heap (a heap that small cannot use that many bytes of binaries
/// whole: the rest is likely parents kept alive by sub-binaries). 0 otherwise.
pub fn pinned_bytes(f: &Facts) -> u64 {
    let pinned = f.retained_binary_bytes >= PINNED_MIN_BYTES
        && f.retained_binary_bytes >= PINNED_RATIO.saturating_mul(f.heap_bytes.max(1))
        && f.reclaimed_bytes < f.retained_binary_bytes;
    if pinned {
        f.retained_binary_bytes.saturating_sub(f.heap_bytes)
    } else {
        0
    }
}

/// What the process wastes: the bytes a GC freed plus the bytes held only through small slices
/// of large parents ([`pinned_bytes`]). A process whose slices pin parents ranks by them even
/// after it was collected, when a GC frees nothing more.
pub fn waste(f: &Facts) -> u64 {
    f.reclaimed_bytes.saturating_add(pinned_bytes(f))
}

/// Picks a suggestion and explains it with the process's own numbers.
pub fn suggest(f: &Facts) -> (Suggestion, String) {
    if f.system_process {
        return (
            Suggestion::None,
            "one of OTP's own processes: nothing to change in it".to_string(),
        );
    }
    if f.off_heap_queue && f.message_queue_len > 0 {
        return (
            Suggestion::OffHeapQueue,
            format!(
                "{} messages queued off the heap (message_queue_data: :off_heap): binaries in them are not in process_info(pid, :binary), so these figures leave them out; drain the queue or bound it",
                f.message_queue_len
            ),
        );
    }
    if f.message_queue_len >= LONG_QUEUE {
        return (
            Suggestion::OffHeapQueue,
            format!(
                "{} messages queued: every GC scans them and their binaries; with message_queue_data: :off_heap they stay outside the heap",
                f.message_queue_len
            ),
        );
    }
    if pinned_bytes(f) > 0 {
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
    if f.reductions_delta < IDLE_REDUCTIONS && f.passive_recv {
        return (
            Suggestion::None,
            format!(
                "blocked in a passive receive while holding {} bytes only a GC would free: it cannot hibernate there; call :erlang.garbage_collect/0 before the blocking recv, or switch the socket to active: :once and hibernate between messages",
                f.reclaimed_bytes
            ),
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

    #[test]
    fn slices_pinning_parents_waste_what_they_pin_even_after_a_collection() {
        // A router keeping a 100-byte header of each of 100 clients' last 100 KB packet, already
        // collected: a GC frees nothing, 10 MB stay pinned by a 4 KB heap.
        let router = Facts {
            reclaimed_bytes: 0,
            retained_binary_bytes: 100 * 100_000,
            retained_binaries: 100,
            heap_bytes: 4096,
            reductions_delta: 50_000,
            ..Facts::default()
        };
        assert_eq!(pinned_bytes(&router), 100 * 100_000 - 4096);
        assert_eq!(waste(&router), 100 * 100_000 - 4096);
        assert_eq!(suggest(&router).0, Suggestion::BinaryCopy);
        // One that freed 1 MB and keeps what its heap can use wastes the 1 MB only.
        let freed = Facts {
            reclaimed_bytes: 1 << 20,
            retained_binary_bytes: 1 << 20,
            heap_bytes: 1 << 20,
            ..Facts::default()
        };
        assert_eq!(pinned_bytes(&freed), 0);
        assert_eq!(waste(&freed), 1 << 20);
        assert!(waste(&router) > waste(&freed));
    }

    #[test]
    fn system_processes_get_no_advice_and_passive_receivers_no_hibernation() {
        let idle = Facts {
            reclaimed_bytes: 10 << 20,
            ..Facts::default()
        };
        assert_eq!(suggest(&idle).0, Suggestion::HibernateIdle);
        let system = Facts {
            system_process: true,
            ..idle
        };
        assert_eq!(suggest(&system).0, Suggestion::None);
        let recv = Facts {
            passive_recv: true,
            ..idle
        };
        let (s, why) = suggest(&recv);
        assert_eq!(s, Suggestion::None);
        assert!(why.contains("passive receive") && !why.contains("hibernate in"));
        let off_heap = Facts {
            off_heap_queue: true,
            message_queue_len: 3,
            ..idle
        };
        let (s, why) = suggest(&off_heap);
        assert_eq!(s, Suggestion::OffHeapQueue);
        assert!(why.contains("not in process_info"));
    }
}
