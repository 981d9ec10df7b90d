//! librdkafka callbacks for a member. They run on the member's poll thread (inside
//! `poll`), never on a tokio worker, so reading stored offsets from the database here with
//! `Handle::block_on` cannot stall the async runtime or panic.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use projections::store::{Batches, StoredPosition};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::Offset;
use tokio::runtime::Handle;

use crate::metrics as m;

pub struct MemberContext {
    pub batches: Batches,
    /// Reads the log's bounds to check stored offsets against them on assignment.
    pub inspector: infra::group_inspect::Inspector,
    /// For reading the record before a stored offset (its fingerprint).
    pub kafka: infra::KafkaSettings,
    pub runtime: Handle,
    pub group: String,
    pub topic: String,
    pub stop: Arc<AtomicBool>,
    /// Partitions this member owns right now.
    pub assigned: Mutex<BTreeSet<i32>>,
    /// Set when the assignment changed; the poll loop then drops buffered records of
    /// partitions it no longer owns.
    pub assignment_changed: AtomicBool,
    /// Where the consumer was positioned for each newly assigned partition (the stored
    /// offset), taken by the poll loop; `None` = from the beginning of the log.
    pub positioned_at: Mutex<BTreeMap<i32, Option<i64>>>,
    /// Log end per partition from librdkafka's periodic statistics (the last stable offset,
    /// as this member reads committed records only): lag without a broker round trip on
    /// the poll thread.
    pub log_ends: Mutex<BTreeMap<i32, i64>>,
    /// The consumer protocol (KIP-848) only ever assigns and revokes incrementally.
    pub incremental: bool,
    /// A refusal of this member's credentials or ACLs; the poll loop stops on it.
    pub access: infra::access_check::AccessReport,
}

impl MemberContext {
    /// Whether assignments change partition by partition (cooperative-sticky or the
    /// consumer protocol) rather than all at once (eager).
    fn incremental(&self, consumer: &BaseConsumer<Self>) -> bool {
        self.incremental || matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative)
    }

    pub fn owned(&self) -> BTreeSet<i32> {
        self.assigned.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the stored offsets (with the timestamps of the records last applied) for
    /// exactly these partitions, retrying while the database is unreachable (a member that
    /// cannot read its offsets must not consume).
    fn stored_positions(&self, partitions: &[i32]) -> Option<Vec<StoredPosition>> {
        let mut backoff = infra::Backoff::new("Reading the stored offsets");
        loop {
            match self.runtime.block_on(self.batches.stored_positions(&self.group, &self.topic, partitions)) {
                Ok(offsets) => {
                    backoff.succeeded(&self.group);
                    return Some(offsets);
                }
                Err(e) => {
                    let delay = backoff.failed(&e, &self.group);
                    if self.stop.load(Ordering::Relaxed) {
                        return None;
                    }
                    std::thread::sleep(delay);
                }
            }
        }
    }

    /// The partitions whose stored offset the member must not follow: outside the log —
    /// beyond the end (a recreated topic, a database of another cluster or time) it would
    /// skip every record until the log grows past it, below the start (retention deleted
    /// what this group never applied) it would skip what was deleted — or inside it but
    /// after a record that is not the one the group applied (another log with the same
    /// offsets). Each is refused loudly and recorded; an operator decides (`orderflow
    /// offsets reset`). The record fingerprints are read with one reader for all partitions.
    fn refused(&self, stored: &[StoredPosition]) -> BTreeSet<i32> {
        let mut refused = BTreeSet::new();
        let mut bounds = BTreeMap::new();
        let mut fingerprints = Vec::new();
        let applied: BTreeMap<i32, i64> =
            stored.iter().filter_map(|s| Some((s.partition, s.last_timestamp_ms?))).collect();
        for StoredPosition { partition, offset, .. } in stored {
            let (start, end) = match self.inspector.bounds(&self.topic, *partition) {
                Ok(b) => b,
                Err(e) => {
                    // Without the bounds nothing can be checked; fetching will tell.
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        partition,
                        "Cannot read the log's bounds. The stored offset is not checked; fetching will tell."
                    );
                    continue;
                }
            };
            bounds.insert(*partition, (start, end));
            if !(start..=end).contains(offset) {
                self.refuse(*partition, *offset, (start, end), None);
                refused.insert(*partition);
            } else if *offset > start && applied.contains_key(partition) {
                fingerprints.push((*partition, offset - 1));
            }
        }
        let found = infra::group_inspect::Inspector::timestamps_at(
            &self.kafka,
            &self.topic,
            &fingerprints,
            Duration::from_secs(5),
        );
        match found {
            Ok(found) => {
                for (partition, before) in fingerprints {
                    let (Some(Some(found)), Some(applied)) = (found.get(&partition), applied.get(&partition)) else {
                        continue;
                    };
                    if found != applied {
                        self.refuse(partition, before + 1, bounds[&partition], Some((*applied, *found)));
                        refused.insert(partition);
                    }
                }
            }
            Err(e) => tracing::warn!(
                error = &e as &dyn std::error::Error,
                "Cannot read the records before the stored offsets. Their fingerprints are not checked."
            ),
        }
        refused
    }

    fn refuse(&self, partition: i32, stored: i64, (start, end): (i64, i64), other_log: Option<(i64, i64)>) {
        let fault = projections::store::OffsetFault {
            group: self.group.clone(),
            partition,
            stored_offset: stored,
            log_start: start,
            log_end: end,
            detected_at_ms: schemas::clock::now_ms(),
            other_log,
        };
        tracing::error!(group = %self.group, partition, stored, log_start = start, log_end = end,
            "Refusing the partition: {}. An operator decides with `orderflow offsets reset`.", fault.reason());
        m::offsets_refused(&self.group, partition);
        if let Err(e) = self.runtime.block_on(self.batches.record_offset_fault(&self.topic, &fault)) {
            tracing::error!(error = &e as &dyn std::error::Error, partition, "Cannot record the refused partition in the database. It stays refused; `orderflow offsets` will not show it.");
        }
    }

    /// Checks every owned partition's stored offset against the log and pauses those
    /// it must not follow (recorded and logged by [`Self::refused`]).
    pub fn refuse_out_of_range(&self, consumer: &BaseConsumer<Self>) {
        let owned: Vec<i32> = self.owned().into_iter().collect();
        let Some(stored) = self.stored_positions(&owned) else { return };
        let mut refused = TopicPartitionList::new();
        for p in self.refused(&stored) {
            refused.add_partition(&self.topic, p);
        }
        if refused.count() > 0 {
            if let Err(e) = consumer.pause(&refused) {
                tracing::error!(error = &e as &dyn std::error::Error, group = %self.group, "Cannot pause the refused partitions. Restart the member so it does not read them.");
            }
        }
    }

    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let offered: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let Some(stored) = self.stored_positions(&offered) else { return };
        let refused = self.refused(&stored);
        let offset_of = |p: i32| stored.iter().find(|s| s.partition == p).map(|s| s.offset);
        // Offsets go into the list *before* the single assign call: seeking right after an
        // assign can fail with a state error.
        let mut accepted = TopicPartitionList::new();
        let mut partitions = Vec::new();
        for p in &offered {
            let offset = match offset_of(*p) {
                Some(_) if refused.contains(p) => continue,
                Some(o) => Offset::Offset(o),
                None => Offset::Beginning,
            };
            if let Err(e) = accepted.add_partition_offset(&self.topic, *p, offset) {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    partition = p,
                    "Cannot position the consumer at the stored offset. The partition is not read; restart the member."
                );
                continue;
            }
            partitions.push(*p);
        }
        let tpl = &accepted;
        let result = if self.incremental(consumer) { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
        match result {
            Ok(()) => {
                let mut owned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
                owned.extend(partitions.iter().copied());
                let mut positioned = self.positioned_at.lock().unwrap_or_else(|e| e.into_inner());
                for p in &partitions {
                    positioned.insert(*p, offset_of(*p));
                }
                tracing::info!(group = %self.group, ?partitions, ?stored, "Partitions assigned.");
                m::rebalance(&self.group, "assign");
            }
            // A silently failed assign consumes nothing: say it loudly.
            Err(e) => {
                tracing::error!(error = &e as &dyn std::error::Error, group = %self.group, ?partitions, "The assignment failed. These partitions are not read until the next rebalance; restart the member if it lasts.")
            }
        }
        self.assignment_changed.store(true, Ordering::SeqCst);
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        // Only what was assigned: refused partitions never were.
        let owned = self.owned();
        let mut tpl = TopicPartitionList::new();
        for e in revoked.elements().iter().filter(|e| owned.contains(&e.partition())) {
            tpl.add_partition(&self.topic, e.partition());
        }
        let tpl = &tpl;
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        // Mark first, so buffered records of these partitions are dropped; nothing is
        // committed to Kafka: the offsets live with the projection.
        {
            let mut owned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
            for p in &partitions {
                owned.remove(p);
            }
        }
        self.assignment_changed.store(true, Ordering::SeqCst);
        let result = if self.incremental(consumer) { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
        if let Err(e) = result {
            tracing::warn!(error = &e as &dyn std::error::Error, group = %self.group, ?partitions, "Giving up partitions failed. The next rebalance settles it.");
        }
        tracing::info!(group = %self.group, ?partitions, "Partitions revoked.");
        m::rebalance(&self.group, "revoke");
    }
}

impl ClientContext for MemberContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let mut ends = self.log_ends.lock().unwrap_or_else(|e| e.into_inner());
        for (id, partition) in &topic.partitions {
            // -1 = the internal "unassigned" partition; negative offsets = not known yet.
            let end = if partition.ls_offset >= 0 { partition.ls_offset } else { partition.hi_offset };
            if *id >= 0 && end >= 0 {
                ends.insert(*id, end);
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.access.record(&error, reason);
        tracing::error!(target: "librdkafka", error = &error as &dyn std::error::Error, group = %self.group, "{reason}");
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.access.observe_log(fac, message);
        // Exceeding max.poll.interval.ms only shows up as a log line: count it.
        if message.contains("max.poll.interval.ms") {
            m::max_poll_exceeded(&self.group);
        }
        // The offset copy committed to Kafka is best effort (the database holds the truth);
        // its failures during a rebalance are expected.
        if fac == "COMMITFAIL" {
            tracing::debug!(target: "librdkafka", fac, "{message}");
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
        }
    }
}

impl ConsumerContext for MemberContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.on_revoke(consumer, tpl),
            other => {
                tracing::warn!(?other, group = %self.group, "The rebalance failed. Dropping the assignment; the group rebalances again.");
                self.on_revoke(consumer, tpl);
            }
        }
    }
}
