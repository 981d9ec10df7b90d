//! Causal stock: a stock request is decided only after the adjustments its SKU's
//! partition of the adjustments topic held when the request's batch was cut. The checkout
//! acknowledges an adjustment once it is in that log, and an order placed after that
//! acknowledgement is requested later still, so a restock the caller saw acknowledged is
//! always decided before the orders that follow it (restock, then sell), although the two
//! arrive on different topics, read by different consumers.
//!
//! The rule is the registry's ([`projections::registry::GroupKind::waits_for`]); the wait
//! happens before the batch's transaction opens, so it holds no lock another batch needs.
//! An adjustment and a request of one SKU share a partition number (one key, one partition
//! count), so only the batch's partitions are looked at.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use infra::group_inspect::Inspector;
use projections::store::{Batches, LogRecord};

/// How often the stored offsets of the topic waited on are read while waiting.
const LOOK_EVERY: Duration = Duration::from_millis(5);
/// Past this, the batch is decided anyway (a WARN says so): the topic waited on has no
/// member making progress, and holding stock decisions back longer would stall every
/// order of those SKUs. Nothing is oversold either way; only a request that overtook its
/// restock can be rejected.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// What a consumer waits for before applying a batch: another topic of its group, read
/// by the group up to where that topic ended when the batch was cut.
#[derive(Clone)]
pub(super) struct Causes {
    pub inspector: Arc<Inspector>,
    pub group: String,
    pub topic: String,
}

impl Causes {
    /// Waits until the group has applied `topic` up to its current end on the partitions
    /// of `records`, or [`GIVE_UP_AFTER`].
    pub async fn wait(&self, batches: &Batches, records: &[LogRecord]) {
        let partitions: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
        let partitions: Vec<i32> = partitions.into_iter().collect();
        let inspector = self.inspector.clone();
        let (topic, wanted) = (self.topic.clone(), partitions.clone());
        let ends = tokio::task::spawn_blocking(move || {
            wanted.iter().map(|p| inspector.bounds(&topic, *p).map(|(start, end)| (*p, start, end))).collect()
        })
        .await;
        let ends: Vec<(i32, i64, i64)> = match ends {
            Ok(Ok(ends)) => ends,
            Ok(Err(e)) => {
                tracing::warn!(error = &e as &dyn std::error::Error, group = %self.group, topic = %self.topic,
                    "Cannot read where the adjustments end. Deciding this batch without waiting for them.");
                return;
            }
            Err(_) => return,
        };
        let started = Instant::now();
        loop {
            match batches.reads().stored_offsets(&self.group, &self.topic, &partitions).await {
                Ok(stored) => {
                    let behind = ends.iter().any(|(p, start, end)| {
                        let next = stored.iter().find(|(q, _)| q == p).map(|(_, n)| *n);
                        end > start && next.is_none_or(|n| n < *end)
                    });
                    if !behind {
                        return;
                    }
                }
                Err(e) => tracing::debug!(error = &e as &dyn std::error::Error, "Reading stored offsets failed."),
            }
            if started.elapsed() >= GIVE_UP_AFTER {
                tracing::warn!(group = %self.group, topic = %self.topic, waited = ?GIVE_UP_AFTER,
                    "The adjustments this batch of stock requests follows were not applied in time (no member of \
                     the group reads them?). Deciding the batch anyway: a request may overtake its restock.");
                return;
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }
}
