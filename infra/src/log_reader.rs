//! Reads whole topics from their first record to a fixed end, outside any consumer
//! group: what a rebuild from the log reads when no live group may take part (the
//! processes' state, the checkout's keys). Blocking librdkafka calls; call from
//! `spawn_blocking`.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

use crate::error::InfraError;
use crate::group_inspect::Inspector;
use crate::kafka_settings::KafkaSettings;

/// One record as the log holds it.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl StoredRecord {
    /// The value of header `name`, if the record has it.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }
}

/// Where each partition of `topics` ends now (the next offset to be written): the end a
/// rebuild reads to, taken before it reads, so records appended meanwhile are left to the
/// live group that resumes at these offsets. A topic that does not exist has no entry.
pub fn ends_now(
    settings: &KafkaSettings,
    topics: &[String],
    timeout: Duration,
) -> Result<BTreeMap<(String, i32), i64>, InfraError> {
    let inspector = Inspector::new(settings, timeout)?;
    let mut ends = BTreeMap::new();
    for topic in topics {
        for (partition, end) in inspector.log_ends(topic)? {
            ends.insert((topic.clone(), partition), end);
        }
    }
    Ok(ends)
}

/// Calls `each` with every record of the partitions in `ends`, from the first the log
/// still holds up to (not including) its end, partition by partition in offset order.
/// Gives up if no record arrives for `stall` while some partition is unfinished.
pub fn read_to(
    settings: &KafkaSettings,
    ends: &BTreeMap<(String, i32), i64>,
    stall: Duration,
    mut each: impl FnMut(StoredRecord),
) -> Result<u64, InfraError> {
    let what = || "reading the log to rebuild from it".to_string();
    let reader: BaseConsumer = settings
        .client_config_with(&[
            ("group.id", "orderflow-log-reader"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
            // Only what producers committed: a transactional writer's aborted records are
            // not part of the log's story.
            ("isolation.level", "read_committed"),
        ])
        .create()
        .map_err(InfraError::admin(what()))?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut unfinished: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for ((topic, partition), end) in ends {
        let (start, _) = reader
            .fetch_watermarks(topic, *partition, stall)
            .map_err(InfraError::admin(format!("watermarks of {topic}/{partition}")))?;
        if start < *end {
            assignment
                .add_partition_offset(topic, *partition, rdkafka::Offset::Offset(start))
                .map_err(InfraError::admin(what()))?;
            unfinished.insert((topic.clone(), *partition), *end);
        }
    }
    if unfinished.is_empty() {
        return Ok(0);
    }
    reader.assign(&assignment).map_err(InfraError::admin(what()))?;
    let mut read = 0u64;
    let mut last_progress = Instant::now();
    while !unfinished.is_empty() {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                last_progress = Instant::now();
                let key = (message.topic().to_string(), message.partition());
                let Some(end) = unfinished.get(&key).copied() else { continue };
                if message.offset() < end {
                    read += 1;
                    let headers = message
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec).unwrap_or_default()))
                                .collect()
                        })
                        .unwrap_or_default();
                    each(StoredRecord {
                        topic: key.0.clone(),
                        partition: key.1,
                        offset: message.offset(),
                        timestamp_ms: message.timestamp().to_millis(),
                        key: message.key().map(<[u8]>::to_vec),
                        payload: message.payload().map(<[u8]>::to_vec),
                        headers,
                    });
                }
                if message.offset() + 1 >= end {
                    unfinished.remove(&key);
                }
            }
            Some(Err(e)) => return Err(InfraError::Admin { what: what(), source: e }),
            None => {
                // The last offsets may be no records (transaction markers): a partition
                // whose position reached its end is done.
                let position = reader.position().map_err(InfraError::admin(what()))?;
                unfinished.retain(|(topic, partition), end| {
                    !matches!(position.find_partition(topic, *partition).map(|e| e.offset()),
                        Some(rdkafka::Offset::Offset(at)) if at >= *end)
                });
                if !unfinished.is_empty() && last_progress.elapsed() > stall {
                    return Err(InfraError::AdminTimeout(stall));
                }
            }
        }
    }
    Ok(read)
}
