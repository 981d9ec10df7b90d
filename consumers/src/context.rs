//! librdkafka callbacks for a member. They run on the member's poll thread (inside
//! `poll`), never on a tokio worker, so reading stored offsets from the database here with
//! `Handle::block_on` cannot stall the async runtime or panic.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use projections::store::Store;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::Offset;
use tokio::runtime::Handle;

use crate::metrics as m;

pub struct MemberContext {
    pub store: Store,
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

    /// Reads the stored offsets for exactly these partitions, retrying while the database
    /// is unreachable (a member that cannot read its offsets must not consume).
    fn stored_offsets(&self, partitions: &[i32]) -> Option<Vec<(i32, i64)>> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.runtime.block_on(self.store.stored_offsets(&self.group, &self.topic, partitions)) {
                Ok(offsets) => return Some(offsets),
                Err(e) => {
                    tracing::error!(error = &e as &dyn std::error::Error, group = %self.group, "cannot read stored offsets; retrying");
                    if self.stop.load(Ordering::Relaxed) {
                        return None;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let Some(stored) = self.stored_offsets(&partitions) else { return };
        // Offsets go into the list *before* the single assign call: seeking right after an
        // assign can fail with a state error.
        for p in &partitions {
            let offset = stored.iter().find(|(sp, _)| sp == p).map_or(Offset::Beginning, |(_, o)| Offset::Offset(*o));
            if let Err(e) = tpl.set_partition_offset(&self.topic, *p, offset) {
                tracing::error!(error = &e as &dyn std::error::Error, partition = p, "cannot set start offset");
            }
        }
        let result = if self.incremental(consumer) { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
        match result {
            Ok(()) => {
                let mut owned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
                owned.extend(partitions.iter().copied());
                let mut positioned = self.positioned_at.lock().unwrap_or_else(|e| e.into_inner());
                for p in &partitions {
                    positioned.insert(*p, stored.iter().find(|(sp, _)| sp == p).map(|(_, o)| *o));
                }
                tracing::info!(group = %self.group, ?partitions, ?stored, "assigned");
                m::rebalance(&self.group, "assign");
            }
            // A silently failed assign consumes nothing: say it loudly.
            Err(e) => {
                tracing::error!(error = &e as &dyn std::error::Error, group = %self.group, ?partitions, "assign failed")
            }
        }
        self.assignment_changed.store(true, Ordering::SeqCst);
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
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
            tracing::error!(error = &e as &dyn std::error::Error, group = %self.group, ?partitions, "unassign failed");
        }
        tracing::info!(group = %self.group, ?partitions, "revoked");
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

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
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
                tracing::error!(?other, group = %self.group, "rebalance error; dropping the assignment");
                self.on_revoke(consumer, tpl);
            }
        }
    }
}
