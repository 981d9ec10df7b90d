//! The bookkeeping of a committed batch, whichever path committed it (the batch in flight,
//! or a slice of the careful path): positions, counters, rewinds, the offsets' copy in Kafka.
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use projections::store::{BatchOutcome, LogRecord};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::env::BatchEnv;
use super::reading::Reading;
use crate::metrics as m;

/// Bookkeeping after a batch committed: positions, counters, rewinds, the offsets' copy
/// in Kafka.
pub(super) fn record_applied(
    env: &BatchEnv<'_>,
    batch: &[LogRecord],
    reading: &mut Reading,
    outcome: &BatchOutcome,
    started: Instant,
) {
    let BatchEnv { consumer, config, stats, .. } = *env;
    reading.applied(batch);
    m::batch_done(&config.group, batch.len(), outcome, started.elapsed().as_secs_f64());
    stats.records.fetch_add(batch.len() as u64, Ordering::Relaxed);
    stats.applied.fetch_add(outcome.applied as u64, Ordering::Relaxed);
    stats.dead_lettered.fetch_add(outcome.dead_lettered as u64, Ordering::Relaxed);
    stats.batches.fetch_add(1, Ordering::Relaxed);
    for (p, offset) in &outcome.rewind {
        m::rewind(&config.group);
        reading.rewind(*p, *offset);
        if let Err(e) = consumer.seek(&config.topic, *p, Offset::Offset(*offset), Duration::from_secs(5)) {
            tracing::error!(error = &e as &dyn std::error::Error, group = %config.group, partition = p,
                "Cannot rewind the consumer to the stored offset. The member stops reading this partition correctly until it is reassigned; restart the member.");
        }
    }
    if outcome.already_applied > 0 {
        tracing::info!(group = %config.group, records = outcome.already_applied,
            "Records were already applied by another member and were skipped (fenced).");
    }
    let mut positions = stats.positions.lock().unwrap_or_else(|e| e.into_inner());
    let mut committed = TopicPartitionList::new();
    for (p, next) in &outcome.next_offsets {
        positions.insert((config.topic.clone(), *p), *next);
        let _ = committed.add_partition_offset(&config.topic, *p, Offset::Offset(*next));
    }
    // A copy for Kafka's tooling and autoscalers, after the database commit; never read back.
    if let Err(e) = consumer.commit(&committed, CommitMode::Async) {
        tracing::debug!(error = &e as &dyn std::error::Error, "Could not copy the offsets to Kafka (tooling only).");
    }
}
