//! What the broker knows about a topic and a consumer group: log end offsets per
//! partition and the group's members with their assigned partitions. Blocking librdkafka
//! calls; call them from `spawn_blocking`.
use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::error::InfraError;
use crate::kafka_settings::KafkaSettings;

/// One member of a consumer group as the group coordinator reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    /// Partitions of the inspected topic assigned to this member.
    pub partitions: Vec<i32>,
}

/// A client for inspection only: it joins no group.
pub struct Inspector {
    consumer: BaseConsumer,
    timeout: Duration,
}

impl Inspector {
    pub fn new(settings: &KafkaSettings, timeout: Duration) -> Result<Self, InfraError> {
        let consumer: BaseConsumer = settings
            .client_config_with(&[("group.id", "orderflow-inspector"), ("enable.auto.commit", "false")])
            .create()
            .map_err(InfraError::admin("creating the inspecting client"))?;
        Ok(Inspector { consumer, timeout })
    }

    /// The next offset to be written per partition (the high watermark).
    pub fn log_ends(&self, topic: &str) -> Result<BTreeMap<i32, i64>, InfraError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), self.timeout)
            .map_err(InfraError::admin(format!("metadata of {topic}")))?;
        let mut ends = BTreeMap::new();
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(topic, p.id(), self.timeout)
                    .map_err(InfraError::admin(format!("watermarks of {topic}/{}", p.id())))?;
                ends.insert(p.id(), high);
            }
        }
        Ok(ends)
    }

    /// The first and the next offset of one partition (low and high watermarks): the
    /// records the log still holds are `start..end`.
    pub fn bounds(&self, topic: &str, partition: i32) -> Result<(i64, i64), InfraError> {
        self.consumer
            .fetch_watermarks(topic, partition, self.timeout)
            .map_err(InfraError::admin(format!("watermarks of {topic}/{partition}")))
    }

    /// The timestamps of the records at the given (partition, offset)s, read with one
    /// consumer of its own (no group) within `timeout`; `None` for a partition where no
    /// record has that offset (a transaction marker, compaction) or none arrived in time.
    pub fn timestamps_at(
        settings: &KafkaSettings,
        topic: &str,
        at: &[(i32, i64)],
        timeout: Duration,
    ) -> Result<BTreeMap<i32, Option<i64>>, InfraError> {
        use rdkafka::Message;
        let mut found = BTreeMap::new();
        if at.is_empty() {
            return Ok(found);
        }
        let what = || format!("reading records of {topic}");
        let reader: BaseConsumer = settings
            .client_config_with(&[("group.id", "orderflow-inspector"), ("enable.auto.commit", "false")])
            .create()
            .map_err(InfraError::admin(what()))?;
        let mut assignment = rdkafka::TopicPartitionList::new();
        for (partition, offset) in at {
            assignment
                .add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset))
                .map_err(InfraError::admin(what()))?;
        }
        reader.assign(&assignment).map_err(InfraError::admin(what()))?;
        let deadline = std::time::Instant::now() + timeout;
        while found.len() < at.len() && std::time::Instant::now() < deadline {
            match reader.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let wanted = at.iter().find(|(p, _)| *p == message.partition()).map(|(_, o)| *o);
                    found.entry(message.partition()).or_insert_with(|| {
                        (Some(message.offset()) == wanted).then(|| message.timestamp().to_millis()).flatten()
                    });
                }
                Some(Err(e)) => return Err(InfraError::Admin { what: what(), source: e }),
                None => {}
            }
        }
        for (partition, _) in at {
            found.entry(*partition).or_insert(None);
        }
        Ok(found)
    }

    /// The timestamp (ms) of the newest record of `topic` over all its partitions; `None`
    /// when it holds none (or the newest offset is no record, e.g. a transaction marker).
    pub fn newest_timestamp(
        settings: &KafkaSettings,
        topic: &str,
        timeout: Duration,
    ) -> Result<Option<i64>, InfraError> {
        let ends = Inspector::new(settings, timeout)?.log_ends(topic)?;
        let last: Vec<(i32, i64)> = ends.into_iter().filter(|(_, end)| *end > 0).map(|(p, end)| (p, end - 1)).collect();
        Ok(Inspector::timestamps_at(settings, topic, &last, timeout)?.into_values().flatten().max())
    }

    /// How far behind its source region this cluster's copy of it is: now minus the
    /// newest of MirrorMaker 2's heartbeats copied from `source` (`<source>.heartbeats`;
    /// the source's MirrorMaker 2 writes one a second, so an idle mirror shows about a
    /// second). `None` when no heartbeat was copied yet.
    pub fn mirror_age(
        settings: &KafkaSettings,
        source: &str,
        timeout: Duration,
    ) -> Result<Option<Duration>, InfraError> {
        let newest = Inspector::newest_timestamp(settings, &format!("{source}.heartbeats"), timeout)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        Ok(newest.map(|ms| Duration::from_millis(now.saturating_sub(ms.max(0) as u128) as u64)))
    }

    /// The offset in `topic`/`partition` of the first record at or after `timestamp_ms`
    /// whose header `header` is `value`, reading forward until it is found or `deadline`
    /// passes (`None`: not there, or not yet). For finding a record's copy in another
    /// cluster, whose offsets differ from the original's: copies keep timestamps, headers
    /// and the order within a partition, so the first match is the record itself (a later
    /// duplicate of it can only follow).
    pub fn find_by_header(
        settings: &KafkaSettings,
        topic: &str,
        partition: i32,
        timestamp_ms: i64,
        (header, value): (&str, &[u8]),
        deadline: std::time::Instant,
    ) -> Result<Option<i64>, InfraError> {
        use rdkafka::message::{Headers, Message};
        let what = || format!("looking for a record in {topic}/{partition}");
        let reader: BaseConsumer = settings
            .client_config_with(&[("group.id", "orderflow-inspector"), ("enable.auto.commit", "false")])
            .create()
            .map_err(InfraError::admin(what()))?;
        let timeout = deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(100));
        // Where the log ends now, before asking by time: a record copied in between is at
        // or after it, so starting there when no record is that recent yet misses nothing.
        let (_, end) = match reader.fetch_watermarks(topic, partition, timeout) {
            Ok(bounds) => bounds,
            Err(e) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition) => {
                return Ok(None)
            }
            Err(e) => return Err(InfraError::Admin { what: what(), source: e }),
        };
        let mut by_time = rdkafka::TopicPartitionList::new();
        by_time
            .add_partition_offset(topic, partition, rdkafka::Offset::Offset(timestamp_ms))
            .map_err(InfraError::admin(what()))?;
        let found = reader.offsets_for_times(by_time, timeout).map_err(InfraError::admin(what()))?;
        let start = match found.find_partition(topic, partition).map(|e| e.offset()) {
            Some(rdkafka::Offset::Offset(offset)) => offset,
            _ => end,
        };
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, rdkafka::Offset::Offset(start))
            .map_err(InfraError::admin(what()))?;
        reader.assign(&assignment).map_err(InfraError::admin(what()))?;
        while std::time::Instant::now() < deadline {
            match reader.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => {
                    let matches =
                        message.headers().is_some_and(|h| h.iter().any(|h| h.key == header && h.value == Some(value)));
                    if matches {
                        return Ok(Some(message.offset()));
                    }
                }
                Some(Err(e)) => return Err(InfraError::Admin { what: what(), source: e }),
                None => {}
            }
        }
        Ok(None)
    }

    /// The partitions of `topic` (empty if the topic does not exist).
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>, InfraError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), self.timeout)
            .map_err(InfraError::admin(format!("metadata of {topic}")))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect())
    }

    /// Per partition, the offset of the first record at or after `at_ms` (the log end when
    /// there is none).
    pub fn offsets_at(&self, topic: &str, partitions: &[i32], at_ms: i64) -> Result<BTreeMap<i32, i64>, InfraError> {
        let mut query = rdkafka::TopicPartitionList::new();
        for p in partitions {
            query
                .add_partition_offset(topic, *p, rdkafka::Offset::Offset(at_ms))
                .map_err(InfraError::admin(format!("offsets of {topic} at {at_ms}")))?;
        }
        let found = self
            .consumer
            .offsets_for_times(query, self.timeout)
            .map_err(InfraError::admin(format!("offsets of {topic} at {at_ms}")))?;
        let mut offsets = BTreeMap::new();
        for element in found.elements() {
            let offset = match element.offset() {
                rdkafka::Offset::Offset(o) => o,
                // No record that late: the end of the partition.
                _ => self.bounds(topic, element.partition())?.1,
            };
            offsets.insert(element.partition(), offset);
        }
        Ok(offsets)
    }

    /// The group's current members and which partitions of `topic` each owns.
    pub fn members(&self, group: &str, topic: &str) -> Result<Vec<GroupMember>, InfraError> {
        let list = self
            .consumer
            .fetch_group_list(Some(group), self.timeout)
            .map_err(InfraError::admin(format!("describing group {group}")))?;
        let mut members = Vec::new();
        for g in list.groups().iter().filter(|g| g.name() == group) {
            for m in g.members() {
                let mut partitions = m.assignment().map(|a| assigned_partitions(a, topic)).unwrap_or_default();
                partitions.sort_unstable();
                members.push(GroupMember {
                    member_id: m.id().to_string(),
                    client_id: m.client_id().to_string(),
                    host: m.client_host().to_string(),
                    partitions,
                });
            }
        }
        members.sort_by(|a, b| a.partitions.first().cmp(&b.partitions.first()).then(a.member_id.cmp(&b.member_id)));
        Ok(members)
    }
}

/// Reads the consumer protocol's member assignment: version (i16), then an array of
/// (topic: string, partitions: [i32]), then user data. Anything malformed yields what
/// was read so far: this is for display, never for decisions.
pub fn assigned_partitions(bytes: &[u8], topic: &str) -> Vec<i32> {
    let mut r = Reader { bytes, at: 0 };
    let mut out = Vec::new();
    let parsed = (|| -> Option<()> {
        r.i16()?;
        let topics = r.i32()?;
        for _ in 0..topics.max(0) {
            let name = r.string()?;
            let count = r.i32()?;
            for _ in 0..count.max(0) {
                let p = r.i32()?;
                if name == topic {
                    out.push(p);
                }
            }
        }
        Some(())
    })();
    let _ = parsed;
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let len = self.i16()?;
        let raw = self.take(usize::try_from(len).ok()?)?;
        Some(String::from_utf8_lossy(raw).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = vec![0, 1];
        b.extend((topics.len() as i32).to_be_bytes());
        for (name, parts) in topics {
            b.extend((name.len() as i16).to_be_bytes());
            b.extend(name.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            for p in *parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes());
        b
    }

    #[test]
    fn reads_the_partitions_of_the_asked_topic_only() {
        let bytes = assignment(&[("other", &[9]), ("orders", &[0, 3, 5])]);
        assert_eq!(assigned_partitions(&bytes, "orders"), vec![0, 3, 5]);
    }

    #[test]
    fn malformed_assignments_yield_what_was_read_never_panic() {
        let bytes = assignment(&[("orders", &[1, 2])]);
        for cut in 0..bytes.len() {
            let _ = assigned_partitions(&bytes[..cut], "orders");
        }
        assert_eq!(assigned_partitions(&bytes[..bytes.len() - 8], "orders"), vec![1]);
        assert!(assigned_partitions(&[0xff; 3], "orders").is_empty());
    }
}
