//! The stored offsets: `consumer_offsets` holds, per (group, topic, partition), the next
//! offset to read. It is the projection's own copy of the consumer position, written in the
//! same transaction as the rows a batch changes, so effects and position move together.
//! Every statement on that table is in this file.
use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use super::connection::{Dialect, Store};
use super::error::StoreError;
use super::roles::{Batches, Operations, Reads};
use super::sql::{Exec, Sql};

/// One partition's stored position of a group.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct GroupPartitionOffset {
    pub group: String,
    pub partition: i32,
    pub next_offset: i64,
    pub updated_at_ms: i64,
}

/// Whether a read takes the rows' write locks (PostgreSQL `FOR UPDATE`, in partition
/// order so that concurrent lockers cannot deadlock). SQLite has no row locks: its single
/// writer serializes transactions instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lock {
    No,
    ForUpdate,
}

/// The stored next offsets of `group` on `topic`: of `partitions`, or of every partition
/// it has a row for when `None`. Absent partitions were never read.
pub(super) async fn read<C: Exec>(
    conn: &mut C,
    dialect: Dialect,
    group: &str,
    topic: &str,
    partitions: Option<&[i32]>,
    lock: Lock,
) -> Result<Vec<(i32, i64)>, StoreError> {
    let mut q = Sql::new("SELECT partition_id, next_offset FROM consumer_offsets WHERE group_id = ");
    q.bind(group.to_string()).push(" AND topic = ").bind(topic.to_string());
    if let Some(partitions) = partitions {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        q.push(" AND partition_id IN ").list(partitions.iter().map(|p| i64::from(*p)));
    }
    q.push(" ORDER BY partition_id");
    if lock == Lock::ForUpdate && dialect == Dialect::Postgres {
        q.push(" FOR UPDATE");
    }
    let rows = q.rows(conn).await?;
    rows.iter()
        .map(|row| Ok((row.try_get::<i64, _>("partition_id")? as i32, row.try_get::<i64, _>("next_offset")?)))
        .collect()
}

/// Creates the rows a batch needs at the offset of its first record (no row = the group
/// starts at the beginning of the log); existing rows are left alone.
pub(super) async fn insert_missing<C: Exec>(
    conn: &mut C,
    group: &str,
    topic: &str,
    firsts: &BTreeMap<i32, i64>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut insert =
        Sql::new("INSERT INTO consumer_offsets (group_id, topic, partition_id, next_offset, updated_at_ms) ");
    insert.values(firsts, |v, (p, first)| {
        v.bind(group.to_string()).bind(topic.to_string()).bind(i64::from(*p)).bind(*first).bind(now_ms);
    });
    insert.push(" ON CONFLICT (group_id, topic, partition_id) DO NOTHING");
    insert.execute(conn).await?;
    Ok(())
}

/// Moves every partition of `next` to its new offset in one statement (one round trip
/// however many partitions a batch spans), with the timestamp of the last record applied
/// (the log's fingerprint at that offset). `VALUES` columns are `column1`, `column2`, … in
/// both databases.
pub(super) async fn advance<C: Exec>(
    conn: &mut C,
    group: &str,
    topic: &str,
    next: &BTreeMap<i32, i64>,
    last_timestamps: &BTreeMap<i32, Option<i64>>,
    now_ms: i64,
) -> Result<(), StoreError> {
    if next.is_empty() {
        return Ok(());
    }
    let mut update = Sql::new(
        "UPDATE consumer_offsets SET next_offset = v.column2, last_timestamp_ms = CAST(v.column3 AS BIGINT), updated_at_ms = ",
    );
    update.bind(now_ms).push(" FROM (");
    update.values(next, |v, (p, offset)| {
        v.bind(i64::from(*p)).bind(*offset).bind(last_timestamps.get(p).copied().flatten());
    });
    update.push(") AS v WHERE consumer_offsets.group_id = ").bind(group.to_string());
    update.push(" AND consumer_offsets.topic = ").bind(topic.to_string());
    update.push(" AND consumer_offsets.partition_id = v.column1");
    update.execute(conn).await?;
    Ok(())
}

/// A partition a member refused to consume: its stored offset lies outside the log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OffsetFault {
    pub group: String,
    pub partition: i32,
    pub stored_offset: i64,
    /// The log held `log_start..log_end` when the member looked.
    pub log_start: i64,
    pub log_end: i64,
    pub detected_at_ms: i64,
    /// Within the bounds, but the record before the stored offset is not the one the group
    /// applied: (the timestamp stored with the offset, the one the log has there).
    pub other_log: Option<(i64, i64)>,
}

impl OffsetFault {
    /// Why the offset cannot be followed, in words.
    pub fn reason(&self) -> String {
        if let Some((stored, found)) = self.other_log {
            return format!(
                "group {} stored offset {} for partition {}, but the record before it is not the one the group \
                 applied (timestamp {found} in the log, {stored} when applied): the topic was recreated, or the \
                 database belongs to another log; `orderflow offsets reset` moves it once an operator has decided",
                self.group, self.stored_offset, self.partition
            );
        }
        let why = if self.stored_offset > self.log_end {
            "beyond the log's end (the topic was recreated, or the database belongs to another cluster or time)"
        } else {
            "below the log's start (retention deleted records this group never applied)"
        };
        format!(
            "group {} stored offset {} for partition {}, {why}: the log holds {}..{}; \
             `orderflow offsets reset` moves it once an operator has decided",
            self.group, self.stored_offset, self.partition, self.log_start, self.log_end
        )
    }
}

/// One partition's move by `orderflow offsets reset`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OffsetMove {
    pub partition: i32,
    /// `None`: the group had never read the partition.
    pub from: Option<i64>,
    pub to: i64,
}

/// Where a group stands on one partition (see [`Batches::stored_positions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPosition {
    pub partition: i32,
    /// The next offset to apply.
    pub offset: i64,
    /// The timestamp of the last record applied (unknown for rows of an earlier release).
    pub last_timestamp_ms: Option<i64>,
}

impl Store {
    /// The stored next offsets of a group for the given partitions (absent: never read).
    #[tracing::instrument(skip(self))]
    pub(super) async fn stored_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, i64)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        read(&mut *conn, self.dialect, group, topic, Some(partitions), Lock::No).await
    }
}

impl Batches {
    /// Per partition, the stored next offset and the timestamp of the last record `group`
    /// applied (where known), read in one statement: the two belong to the same commit. A
    /// member taking a partition over checks the one against the log at the other; read
    /// apart, the previous owner's last batch could commit between them and pair an old
    /// offset with a newer timestamp, which looks like another log and refuses the partition.
    #[tracing::instrument(skip(self))]
    pub async fn stored_positions(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<StoredPosition>, StoreError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut q =
            Sql::new("SELECT partition_id, next_offset, last_timestamp_ms FROM consumer_offsets WHERE group_id = ");
        q.bind(group.to_string()).push(" AND topic = ").bind(topic.to_string()).push(" AND partition_id IN ");
        q.list(partitions.iter().map(|p| i64::from(*p)));
        q.push(" ORDER BY partition_id");
        let rows = q.fetch_all(&self.store.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(StoredPosition {
                    partition: row.try_get::<i64, _>("partition_id")? as i32,
                    offset: row.try_get("next_offset")?,
                    last_timestamp_ms: row.try_get("last_timestamp_ms")?,
                })
            })
            .collect()
    }

    /// Records that `group` refuses to follow its stored offset on `partition`.
    pub async fn record_offset_fault(&self, topic: &str, fault: &OffsetFault) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO offset_faults (group_id, topic, partition_id, stored_offset, log_start, log_end, detected_at_ms,
             applied_timestamp_ms, found_timestamp_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (group_id, topic, partition_id) DO UPDATE SET
             stored_offset = excluded.stored_offset, log_start = excluded.log_start, log_end = excluded.log_end,
             detected_at_ms = excluded.detected_at_ms, applied_timestamp_ms = excluded.applied_timestamp_ms,
             found_timestamp_ms = excluded.found_timestamp_ms",
        )
        .bind(&fault.group)
        .bind(topic)
        .bind(i64::from(fault.partition))
        .bind(fault.stored_offset)
        .bind(fault.log_start)
        .bind(fault.log_end)
        .bind(fault.detected_at_ms)
        .bind(fault.other_log.map(|(stored, _)| stored))
        .bind(fault.other_log.map(|(_, found)| found))
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }
}

impl Reads {
    /// The partitions `group` refuses to follow on `topic` (all of them with `None`).
    pub async fn offset_faults(
        &self,
        group: &str,
        topic: &str,
        partition: Option<i32>,
    ) -> Result<Vec<OffsetFault>, StoreError> {
        let rows = sqlx::query(
            "SELECT group_id, partition_id, stored_offset, log_start, log_end, detected_at_ms, applied_timestamp_ms,
             found_timestamp_ms FROM offset_faults
             WHERE group_id = $1 AND topic = $2 AND ($3 < 0 OR partition_id = $3) ORDER BY partition_id",
        )
        .bind(group)
        .bind(topic)
        .bind(partition.map_or(-1, i64::from))
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OffsetFault {
                    group: r.try_get("group_id")?,
                    partition: r.try_get::<i64, _>("partition_id")? as i32,
                    stored_offset: r.try_get("stored_offset")?,
                    log_start: r.try_get("log_start")?,
                    log_end: r.try_get("log_end")?,
                    detected_at_ms: r.try_get("detected_at_ms")?,
                    other_log: match (
                        r.try_get::<Option<i64>, _>("applied_timestamp_ms")?,
                        r.try_get::<Option<i64>, _>("found_timestamp_ms")?,
                    ) {
                        (Some(stored), Some(found)) => Some((stored, found)),
                        _ => None,
                    },
                })
            })
            .collect()
    }

    /// Stored offsets of every group that has any, on `topic`.
    pub async fn all_group_offsets(&self, topic: &str) -> Result<Vec<GroupPartitionOffset>, StoreError> {
        let rows = sqlx::query(
            "SELECT group_id, partition_id, next_offset, updated_at_ms FROM consumer_offsets WHERE topic = $1
             ORDER BY group_id, partition_id",
        )
        .bind(topic)
        .fetch_all(&self.store.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok(GroupPartitionOffset {
                    group: r.try_get("group_id")?,
                    partition: r.try_get::<i64, _>("partition_id")? as i32,
                    next_offset: r.try_get("next_offset")?,
                    updated_at_ms: r.try_get("updated_at_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }
}

impl Operations {
    /// Moves `group`'s stored offsets on `topic` to `to` (per partition) in one transaction,
    /// clears the partitions' faults and records each move in `offset_resets` with `target`
    /// (how the offsets were chosen) and `operator`. Returns the moves.
    #[tracing::instrument(skip(self, to))]
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: &BTreeMap<i32, i64>,
        target: &str,
        operator: &str,
    ) -> Result<Vec<OffsetMove>, StoreError> {
        let now_ms = schemas::clock::now_ms();
        let mut tx = self.store.begin_write().await?;
        let partitions: Vec<i32> = to.keys().copied().collect();
        let before: BTreeMap<i32, i64> =
            read(&mut tx, self.store.dialect, group, topic, Some(&partitions), Lock::ForUpdate)
                .await?
                .into_iter()
                .collect();
        let mut moves = Vec::new();
        for (p, offset) in to {
            sqlx::query(
                "INSERT INTO consumer_offsets (group_id, topic, partition_id, next_offset, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_id, topic, partition_id) DO UPDATE SET
                 next_offset = excluded.next_offset, updated_at_ms = excluded.updated_at_ms, last_timestamp_ms = NULL",
            )
            .bind(group)
            .bind(topic)
            .bind(i64::from(*p))
            .bind(*offset)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO offset_resets (group_id, topic, partition_id, from_offset, to_offset, target, operator, reset_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(group)
            .bind(topic)
            .bind(i64::from(*p))
            .bind(before.get(p).copied())
            .bind(*offset)
            .bind(target)
            .bind(operator)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM offset_faults WHERE group_id = $1 AND topic = $2 AND partition_id = $3")
                .bind(group)
                .bind(topic)
                .bind(i64::from(*p))
                .execute(&mut *tx)
                .await?;
            moves.push(OffsetMove { partition: *p, from: before.get(p).copied(), to: *offset });
        }
        tx.commit().await?;
        Ok(moves)
    }
}

impl Reads {
    /// Every offset `group` stored for `topic`.
    pub async fn group_offsets(&self, group: &str, topic: &str) -> Result<Vec<(i32, i64)>, StoreError> {
        let mut conn = self.store.pool.acquire().await?;
        read(&mut *conn, self.store.dialect, group, topic, None, Lock::No).await
    }

    /// The offsets `group` stored for these partitions of `topic`.
    pub async fn stored_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, i64)>, StoreError> {
        self.store.stored_offsets(group, topic, partitions).await
    }
}
