//! What a running member shows: counters, lag, where a record's time goes, and the handle
//! that stops it.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::ConsumerError;

/// A partition of one of the topics a member reads.
pub type TopicPartition = (String, i32);

/// Replaces `topic`'s entries of `all` with `mine` (each topic's consumer keeps its own).
pub(super) fn replace_topic<V>(
    all: &Mutex<BTreeMap<TopicPartition, V>>,
    topic: &str,
    mine: impl IntoIterator<Item = (i32, V)>,
) {
    let mut all = all.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|(t, _), _| t != topic);
    all.extend(mine.into_iter().map(|(p, v)| ((topic.to_string(), p), v)));
}

/// Counters a member keeps (over every topic it reads) for progress displays and tests.
#[derive(Debug, Default)]
pub struct MemberStats {
    pub records: AtomicU64,
    pub applied: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub batches: AtomicU64,
    /// Waiting for the schema registry to learn a batch's schema ids.
    pub registry_stalled: AtomicBool,
    /// Next offset per owned partition after the last batch.
    pub positions: Mutex<BTreeMap<TopicPartition, i64>>,
    /// Log end offset per owned partition, refreshed every few seconds.
    pub log_ends: Mutex<BTreeMap<TopicPartition, i64>>,
    pub owned: Mutex<BTreeSet<TopicPartition>>,
    /// Where a record's time goes inside the member, summed over applied records.
    pub timings: Mutex<Timings>,
}

/// Sums over the records of applied batches, each record counted once, so that dividing by
/// `records` gives what an average record experienced: its age when polled (producer's
/// create time → in the member's hands: produce, replication, fetch, librdkafka's queue),
/// its wait in the member's buffer until its batch started (the batch wait and the poll
/// cycle), and the batch's apply time (one database transaction).
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    pub records: u64,
    pub batches: u64,
    pub age_at_poll_ms: f64,
    pub buffer_wait_ms: f64,
    pub apply_ms: f64,
}

impl Timings {
    /// Per-record means of the records applied between `earlier` and `self`.
    pub fn means_since(&self, earlier: &Timings) -> Option<(f64, f64, f64)> {
        let n = self.records.checked_sub(earlier.records).filter(|n| *n > 0)? as f64;
        Some((
            (self.age_at_poll_ms - earlier.age_at_poll_ms) / n,
            (self.buffer_wait_ms - earlier.buffer_wait_ms) / n,
            (self.apply_ms - earlier.apply_ms) / n,
        ))
    }
}

impl MemberStats {
    /// The timings summed so far.
    pub fn timings(&self) -> Timings {
        *self.timings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sum over owned partitions of log end − next offset, if both are known.
    pub fn lag(&self) -> Option<i64> {
        let positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let ends = self.log_ends.lock().unwrap_or_else(|e| e.into_inner());
        let owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        owned.iter().map(|tp| Some((ends.get(tp)? - positions.get(tp).copied().unwrap_or(0)).max(0))).sum()
    }
}

/// A running member (one consumer per topic its group reads): stop it and wait for it.
pub struct MemberHandle {
    pub(super) stop: Arc<AtomicBool>,
    /// Each consumer's thread sends its result here when it ends.
    pub(super) done: tokio::sync::mpsc::UnboundedReceiver<Result<(), ConsumerError>>,
    /// How many consumers have not ended yet.
    pub(super) running: usize,
    pub stats: Arc<MemberStats>,
}

impl MemberHandle {
    /// Asks the member to finish its current batch, leave the group and stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits until the member stopped (by request or error). When one of its consumers
    /// stops on an error, the others are stopped too and the first error is returned.
    pub async fn wait(&mut self) -> Result<(), ConsumerError> {
        let mut first_error = None;
        while self.running > 0 {
            let result = self.done.recv().await.unwrap_or(Err(ConsumerError::Vanished));
            self.running -= 1;
            // A member is whole or stopped: when one consumer ends (on an error, or asked
            // to), the others are asked to stop too.
            self.request_stop();
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    pub async fn stop(mut self) -> Result<(), ConsumerError> {
        self.request_stop();
        self.wait().await
    }
}

impl Drop for MemberHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
