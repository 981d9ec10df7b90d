//! Which records the member may claim are contiguous, and the rules that keep that true
//! across rewinds and rebalances (pure, unit-tested).
use std::collections::{BTreeMap, BTreeSet};

use projections::store::LogRecord;

/// Where this member's consumer reads each partition from, so that a batch can claim
/// "these are all the records from offset N on" only when that is true: the store refuses
/// a partition whose batch would start above its stored offset (a member positioned
/// elsewhere than the database says must not skip records) and the member re-reads it.
/// Offsets may still have gaps (transaction markers, compaction): a gap read across is fine.
#[derive(Debug, Default)]
pub(super) struct Reading {
    /// Per partition: the offset from which the buffered and following records are
    /// contiguous. Absent: from the beginning of the log.
    pub read_from: BTreeMap<i32, i64>,
    /// Partitions a batch rewound since the buffer was last cleaned of them.
    pub rewound: BTreeSet<i32>,
}

impl Reading {
    pub fn positioned(&mut self, partition: i32, at: Option<i64>) {
        match at {
            Some(offset) => self.read_from.insert(partition, offset),
            None => self.read_from.remove(&partition),
        };
    }

    fn keep_only(&mut self, owned: &BTreeSet<i32>) {
        self.read_from.retain(|p, _| owned.contains(p));
    }

    /// A batch committed: this consumer has read each partition up to its last record.
    pub fn applied<'r>(&mut self, records: impl IntoIterator<Item = &'r LogRecord>) {
        for r in records {
            self.read_from.insert(r.partition, r.offset + 1);
        }
    }

    /// A batch found a partition's stored offset behind what this member read (another
    /// member applied less than it thought): the consumer reads it again from there.
    pub fn rewind(&mut self, partition: i32, offset: i64) {
        self.positioned(partition, Some(offset));
        self.rewound.insert(partition);
    }

    /// Drops the buffered records of partitions the last batch rewound: the consumer
    /// reads them again from the stored offset.
    pub fn forget_rewound(&mut self, buffer: &mut Vec<LogRecord>) {
        for p in std::mem::take(&mut self.rewound) {
            buffer.retain(|r| r.partition != p);
        }
    }

    /// The assignment changed (the batch in flight has finished): the buffer keeps only
    /// what this member still owns, and a partition assigned again (`positioned`: where
    /// its stored offset put the consumer) starts over from there.
    pub fn reassigned(
        &mut self,
        buffer: &mut Vec<LogRecord>,
        owned: &BTreeSet<i32>,
        positioned: impl IntoIterator<Item = (i32, Option<i64>)>,
    ) {
        buffer.retain(|r| owned.contains(&r.partition));
        self.keep_only(owned);
        for (p, start) in positioned {
            buffer.retain(|r| r.partition != p);
            self.positioned(p, start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64) -> LogRecord {
        LogRecord {
            partition,
            offset,
            key: None,
            payload: None,
            timestamp_ms: None,
            published_by: None,
            epoch: 1,
            trace_parent: None,
        }
    }

    fn held(buffer: &[LogRecord]) -> Vec<(i32, i64)> {
        buffer.iter().map(|r| (r.partition, r.offset)).collect()
    }

    #[test]
    fn a_committed_batch_moves_each_partition_past_its_last_record() {
        let mut reading = Reading::default();
        reading.applied(&[record(0, 4), record(0, 5), record(2, 9)]);
        assert_eq!(reading.read_from, BTreeMap::from([(0, 6), (2, 10)]));
    }

    #[test]
    fn a_rewound_partition_loses_its_buffered_records_and_reads_from_the_stored_offset() {
        let mut reading = Reading::default();
        reading.applied(&[record(0, 10), record(1, 20)]);
        reading.rewind(0, 7);
        let mut buffer = vec![record(0, 11), record(1, 21), record(0, 12)];
        reading.forget_rewound(&mut buffer);
        assert_eq!(held(&buffer), [(1, 21)]);
        assert_eq!(reading.read_from, BTreeMap::from([(0, 7), (1, 21)]));
        // Forgotten once: a later batch of that partition's re-read records is kept.
        let mut later = vec![record(0, 7)];
        reading.forget_rewound(&mut later);
        assert_eq!(held(&later), [(0, 7)]);
    }

    #[test]
    fn after_a_rebalance_the_buffer_keeps_only_owned_partitions_and_reassigned_ones_start_over() {
        let mut reading = Reading::default();
        reading.applied(&[record(0, 1), record(1, 1), record(2, 1)]);
        let mut buffer = vec![record(0, 2), record(1, 2), record(2, 2)];
        let owned = BTreeSet::from([0, 1]);
        reading.reassigned(&mut buffer, &owned, [(1, Some(0))]);
        assert_eq!(held(&buffer), [(0, 2)], "partition 2 was revoked, partition 1 re-assigned");
        assert_eq!(reading.read_from, BTreeMap::from([(0, 2), (1, 0)]));
        // A partition without a stored offset reads from the beginning of the log.
        reading.reassigned(&mut buffer, &owned, [(0, None)]);
        assert!(buffer.is_empty());
        assert_eq!(reading.read_from, BTreeMap::from([(1, 0)]));
    }
}
