//! Test-only fault points inside the batch transaction, compiled in only with the
//! `fault-injection` feature. `ORDERFLOW_FAULT_POINT` names the point, and
//! `ORDERFLOW_FAULT_ACTION` is `crash` (abort the process: like kill -9, nothing is cleaned
//! up) or `pause:<ms>` (stall, to let a rebalance fence this member). With
//! `ORDERFLOW_FAULT_AFTER_BATCHES=N` the fault fires on the N-th batch (default 1), so a
//! member makes some progress first. `ORDERFLOW_FAULT_REFUSE_OFFSET=<offset>` makes the
//! database genuinely refuse (a NOT NULL violation) any batch holding the record at that
//! offset, as it would refuse a value it cannot store.

/// The places where a batch can be interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    BeforeTransaction,
    AfterProjectionWrite,
    AfterOffsetUpdate,
    AfterCommit,
    /// The relay read outbox events and is about to publish them.
    RelayBeforePublish,
    /// The broker acknowledged them; the relay has not yet removed them from the outbox.
    RelayAfterPublish,
}

impl FaultPoint {
    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::BeforeTransaction => "before_transaction",
            FaultPoint::AfterProjectionWrite => "after_projection_write",
            FaultPoint::AfterOffsetUpdate => "after_offset_update",
            FaultPoint::AfterCommit => "after_commit",
            FaultPoint::RelayBeforePublish => "relay_before_publish",
            FaultPoint::RelayAfterPublish => "relay_after_publish",
        }
    }
}

#[cfg(feature = "fault-injection")]
pub fn hit(point: FaultPoint) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static BATCHES: AtomicU64 = AtomicU64::new(0);
    if std::env::var("ORDERFLOW_FAULT_POINT").ok().as_deref() != Some(point.name()) {
        return;
    }
    let after: u64 = std::env::var("ORDERFLOW_FAULT_AFTER_BATCHES").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    if BATCHES.fetch_add(1, Ordering::SeqCst) + 1 != after {
        return;
    }
    let action = std::env::var("ORDERFLOW_FAULT_ACTION").unwrap_or_else(|_| "crash".into());
    tracing::warn!(point = point.name(), %action, "Fault point hit (fault-injection build).");
    if let Some(ms) = action.strip_prefix("pause:").and_then(|ms| ms.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    } else {
        eprintln!("fault point {} hit: crashing", point.name());
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn hit(_point: FaultPoint) {}

/// The offset whose record the database is made to refuse, if any.
#[cfg(feature = "fault-injection")]
pub fn refused_offset() -> Option<i64> {
    std::env::var("ORDERFLOW_FAULT_REFUSE_OFFSET").ok().and_then(|v| v.parse().ok())
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn refused_offset() -> Option<i64> {
    None
}
