//! What the store is handed and what it answers: records as read from the log, a batch of
//! them, and what applying the batch did. Plain data, shared by every file that applies
//! records.
use std::collections::BTreeMap;

/// A record as read from the log.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The record's timestamp (milliseconds): stored with the offsets, so a member can tell
    /// the log it applied from another one with the same offsets (a recreated topic).
    pub timestamp_ms: Option<i64>,
    /// Who published it ([`schemas::PRINCIPAL_HEADER`]), when the record says so validly.
    pub published_by: Option<String>,
    /// The ownership epoch its [`schemas::EPOCH_HEADER`] names: 1 (no header) when the
    /// order's home appended it, higher when a region that took the home over did.
    pub epoch: u32,
    /// The W3C trace context it continues ([`schemas::TRACE_HEADER`]), when tracing is on
    /// and it carries a valid one. A process's decisions about it carry it to the outbox.
    pub trace_parent: Option<String>,
}

/// Records of one group's consumer to apply together.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    /// Which of the pipeline's topics `topic` is: it decides which kinds of event are
    /// trusted from these records ([`schemas::TopicRole::trusts`]); a kind the group reads
    /// but not from here is refused and recorded, never applied.
    pub role: schemas::TopicRole,
    /// Any partitions, each partition's records in offset order.
    pub records: &'a [LogRecord],
    /// Per partition, the offset the member's consumer was positioned at before the first
    /// of these records: the records are everything the log holds from there on (offsets
    /// may have gaps: transaction markers, compaction, some brokers' batching). A partition
    /// missing from it is trusted to start at its first record.
    pub read_from: &'a BTreeMap<i32, i64>,
}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events whose effect was applied.
    pub applied: usize,
    /// Records at or above the stored offset of a kind this projection does not read.
    pub ignored: usize,
    /// Records below the stored offset: already applied by this or another member.
    pub already_applied: usize,
    /// Events whose id this group had applied before (a retried publish).
    pub duplicates: usize,
    pub dead_lettered: usize,
    /// The next offset to read per partition after this batch.
    pub next_offsets: Vec<(i32, i64)>,
    /// Partitions whose records started above the stored offset: applying them would
    /// skip records, so they were left out; the member must re-read from these offsets.
    pub rewind: Vec<(i32, i64)>,
}
