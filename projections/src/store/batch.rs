//! One batch of log records → one database transaction that applies their effects and
//! advances the stored offsets together (../shared/design/consumer-correctness.md):
//!
//! 1. lock the batch's offset rows; drop records below the stored offset (a zombie that
//!    lost its partitions finds them advanced and applies nothing); refuse a batch that
//!    starts above it (that would be a skip);
//! 2. decode; park undecodable records in `dead_letters`;
//! 3. drop event ids this group already applied (`processed_events`);
//! 4. load the touched orders' rows and which orders are parked;
//! 5. fold the events through the pure projection in log order;
//! 6. write each touched row once, stock changes summed per SKU, dead letters, offsets;
//! 7. commit.
use std::collections::{BTreeMap, HashMap, HashSet};

use schemas::{Codec, Event};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};
use uuid::Uuid;

use super::fault::{hit, FaultPoint};
use super::rows::StoredState;
use super::schema::table_name;
use super::sql::Sql;
use super::{Dialect, Store, StoreError};
use crate::model::{LogPosition, Projection, SkuDelta};

/// Rows per multi-row statement; keeps every statement under both databases' bind limits.
const CHUNK: usize = 500;

/// A record as read from the log.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
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

/// A projection whose state can be stored.
pub trait StoredProjection: Projection<State: StoredState> {}
impl<P: Projection<State: StoredState>> StoredProjection for P {}

struct DeadLetter<'a> {
    record: &'a LogRecord,
    order_id: Option<Uuid>,
    reason: String,
}

impl Store {
    /// Applies `records` (any partitions, each partition's records in offset order) for
    /// consumer group `group` in one transaction.
    ///
    /// `read_from` says, per partition, the offset the member's consumer was positioned at
    /// before the first of these records: the records are everything the log holds from
    /// there on (offsets may have gaps: transaction markers, compaction, some brokers'
    /// batching). A partition missing from it is trusted to start at its first record.
    #[tracing::instrument(skip_all, fields(group, records = records.len()))]
    pub async fn apply_batch<P: StoredProjection>(
        &self,
        group: &str,
        topic: &str,
        records: &[LogRecord],
        read_from: &BTreeMap<i32, i64>,
        codec: &Codec,
    ) -> Result<BatchOutcome, StoreError> {
        let mut outcome = BatchOutcome::default();
        if records.is_empty() {
            return Ok(outcome);
        }
        let generation = self.generation_of(group).await?;
        let state_table = table_name(<P::State as StoredState>::TABLE, generation);
        let sku_table = table_name("inventory_sku", generation);
        hit(FaultPoint::BeforeTransaction);
        let mut tx = self.begin_write().await?;
        let conn: &mut AnyConnection = &mut tx;

        // 1. Offsets: create missing rows at the batch's first offset (no row = start of
        // the log), then lock them so a concurrent member waits for us or we for it.
        let mut firsts: BTreeMap<i32, i64> = BTreeMap::new();
        for r in records {
            firsts.entry(r.partition).or_insert(r.offset);
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut insert =
            Sql::new("INSERT INTO consumer_offsets (group_id, topic, partition_id, next_offset, updated_at_ms) ");
        insert.values(&firsts, |v, (p, first)| {
            v.bind(group.to_string()).bind(topic.to_string()).bind(i64::from(*p)).bind(*first).bind(now_ms);
        });
        insert.push(" ON CONFLICT (group_id, topic, partition_id) DO NOTHING");
        insert.execute(&mut *conn).await?;
        let partitions: Vec<i32> = firsts.keys().copied().collect();
        let stored: HashMap<i32, i64> =
            lock_offsets(conn, self.dialect, group, topic, &partitions).await?.into_iter().collect();

        let mut fresh: Vec<&LogRecord> = Vec::with_capacity(records.len());
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut rewind: BTreeMap<i32, i64> = BTreeMap::new();
        for r in records {
            if rewind.contains_key(&r.partition) {
                continue;
            }
            let stored_offset = stored.get(&r.partition).copied().unwrap_or(r.offset);
            if !next.contains_key(&r.partition) {
                let start = read_from.get(&r.partition).copied().unwrap_or(r.offset);
                if start > stored_offset {
                    // Records between the stored offset and where this member started
                    // reading would be skipped: apply nothing of this partition and have
                    // the member read it again from the stored offset.
                    tracing::error!(
                        partition = r.partition,
                        stored = stored_offset,
                        read_from = start,
                        "batch starts above the stored offset; not applying it, rewinding"
                    );
                    rewind.insert(r.partition, stored_offset);
                    continue;
                }
            }
            if r.offset < next.get(&r.partition).copied().unwrap_or(stored_offset) {
                outcome.already_applied += 1;
                continue;
            }
            next.insert(r.partition, r.offset + 1);
            fresh.push(r);
        }
        outcome.rewind = rewind.into_iter().collect();
        if fresh.is_empty() {
            // Everything was applied already (a fenced zombie): change nothing.
            tx.rollback().await?;
            outcome.next_offsets = stored.into_iter().collect();
            return Ok(outcome);
        }

        // 2. Decode.
        let mut dead: Vec<DeadLetter> = Vec::new();
        let mut events: Vec<(&LogRecord, Event)> = Vec::with_capacity(fresh.len());
        for r in fresh {
            let Some(payload) = r.payload.as_deref() else {
                dead.push(DeadLetter { record: r, order_id: key_order_id(r), reason: "record has no payload".into() });
                continue;
            };
            match codec.peek_kind(payload) {
                Ok(kind) if !P::wants(kind) => outcome.ignored += 1,
                Ok(_) => match codec.decode(payload) {
                    Ok(event) => events.push((r, event)),
                    Err(e) => dead.push(DeadLetter {
                        record: r,
                        order_id: key_order_id(r),
                        reason: format!("undecodable: {e}"),
                    }),
                },
                Err(e) => {
                    dead.push(DeadLetter { record: r, order_id: key_order_id(r), reason: format!("undecodable: {e}") })
                }
            }
        }

        // 3. Deduplicate by event id.
        let ids: Vec<String> = events.iter().map(|(_, e)| e.envelope().event_id.to_string()).collect();
        let new_ids = claim_event_ids(conn, group, &ids).await?;
        let mut seen: HashSet<String> = HashSet::new();
        events.retain(|(_, e)| {
            let id = e.envelope().event_id.to_string();
            let keep = new_ids.contains(&id) && seen.insert(id);
            if !keep {
                outcome.duplicates += 1;
            }
            keep
        });

        // 4. Load state.
        let order_ids: Vec<Uuid> = {
            let set: HashSet<Uuid> =
                events.iter().filter_map(|(_, e)| e.order_id()).chain(dead.iter().filter_map(|d| d.order_id)).collect();
            set.into_iter().collect()
        };
        let mut states: HashMap<Uuid, P::State> = load_states::<P::State>(conn, &state_table, &order_ids).await?;
        let mut parked: HashSet<Uuid> = load_parked(conn, group, &order_ids).await?;
        parked.extend(dead.iter().filter_map(|d| d.order_id));

        // 5. Fold, in log order per partition.
        let mut dirty: HashSet<Uuid> = HashSet::new();
        let mut sku: BTreeMap<String, SkuDelta> = BTreeMap::new();
        for (record, event) in &events {
            let order_id = event.order_id();
            if let Some(id) = order_id.filter(|id| parked.contains(id)) {
                dead.push(DeadLetter {
                    record,
                    order_id: Some(id),
                    reason: "parked: an earlier event of this order is in dead_letters".into(),
                });
                continue;
            }
            let at = LogPosition { partition: record.partition, offset: record.offset };
            match P::apply_at(order_id.and_then(|id| states.get(&id)), event, at) {
                Ok(effect) => {
                    if let Some(state) = effect.order {
                        let id = state.order_id();
                        states.insert(id, state);
                        dirty.insert(id);
                    }
                    for (s, delta) in effect.sku_deltas {
                        sku.entry(s).or_default().add(delta);
                    }
                    outcome.applied += 1;
                }
                Err(rejection) => {
                    if let Some(id) = order_id {
                        parked.insert(id);
                    }
                    dead.push(DeadLetter { record, order_id, reason: rejection.0 });
                }
            }
        }

        // 6. Write.
        let mut changed: Vec<&P::State> = dirty.iter().filter_map(|id| states.get(id)).collect();
        changed.sort_by_key(|s| s.order_id());
        write_states(conn, &state_table, &changed).await?;
        write_sku_deltas(conn, &sku_table, &sku).await?;
        outcome.dead_lettered = dead.len();
        write_dead_letters(conn, group, topic, &dead, now_ms).await?;
        hit(FaultPoint::AfterProjectionWrite);
        // Every partition's offset in one statement (one round trip however many
        // partitions the batch spans). VALUES columns are column1, column2 in both databases.
        let mut update = Sql::new("UPDATE consumer_offsets SET next_offset = v.column2, updated_at_ms = ");
        update.bind(now_ms).push(" FROM (");
        update.values(&next, |v, (p, offset)| {
            v.bind(i64::from(*p)).bind(*offset);
        });
        update.push(") AS v WHERE consumer_offsets.group_id = ").bind(group.to_string());
        update.push(" AND consumer_offsets.topic = ").bind(topic.to_string());
        update.push(" AND consumer_offsets.partition_id = v.column1");
        update.execute(&mut *conn).await?;
        hit(FaultPoint::AfterOffsetUpdate);
        tx.commit().await?;
        hit(FaultPoint::AfterCommit);
        let mut all: BTreeMap<i32, i64> = stored.into_iter().collect();
        all.extend(next);
        outcome.next_offsets = all.into_iter().collect();
        Ok(outcome)
    }
}

/// The key of an order event is its order id: lets an undecodable record still park the
/// events of its order that follow.
fn key_order_id(r: &LogRecord) -> Option<Uuid> {
    r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()).and_then(|k| Uuid::parse_str(k).ok())
}

pub(super) async fn stored_offsets(
    pool: &AnyPool,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, i64)>, StoreError> {
    let mut conn = pool.acquire().await?;
    select_offsets(&mut conn, group, topic, partitions, "").await
}

pub(super) async fn lock_offsets(
    conn: &mut AnyConnection,
    dialect: Dialect,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, i64)>, StoreError> {
    // SQLite has no row locks; its single writer connection serializes batches instead.
    let suffix = if dialect == Dialect::Postgres { " ORDER BY partition_id FOR UPDATE" } else { "" };
    select_offsets(conn, group, topic, partitions, suffix).await
}

async fn select_offsets(
    conn: &mut AnyConnection,
    group: &str,
    topic: &str,
    partitions: &[i32],
    suffix: &str,
) -> Result<Vec<(i32, i64)>, StoreError> {
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = Sql::new("SELECT partition_id, next_offset FROM consumer_offsets WHERE group_id = ");
    q.bind(group.to_string()).push(" AND topic = ").bind(topic.to_string()).push(" AND partition_id IN ");
    q.list(partitions.iter().map(|p| i64::from(*p))).push(suffix);
    let rows = q.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| Ok((row.try_get::<i64, _>("partition_id")? as i32, row.try_get::<i64, _>("next_offset")?)))
        .collect()
}

async fn claim_event_ids(conn: &mut AnyConnection, group: &str, ids: &[String]) -> Result<HashSet<String>, StoreError> {
    let mut new_ids = HashSet::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let mut q = Sql::new("INSERT INTO processed_events (group_id, event_id) ");
        q.values(chunk, |v, id| {
            v.bind(group.to_string()).bind(id.clone());
        });
        q.push(" ON CONFLICT (group_id, event_id) DO NOTHING RETURNING event_id");
        for row in q.fetch_all(&mut *conn).await? {
            new_ids.insert(row.try_get::<String, _>("event_id")?);
        }
    }
    Ok(new_ids)
}

pub(super) async fn load_states<S: StoredState>(
    conn: &mut AnyConnection,
    table: &str,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, S>, StoreError> {
    let mut states = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let mut q = Sql::new(format!("SELECT {} FROM {table} WHERE order_id IN ", S::COLUMNS.join(", ")));
        q.list(chunk.iter().map(Uuid::to_string));
        let rows: Vec<AnyRow> = q.fetch_all(&mut *conn).await?;
        for row in &rows {
            let state = S::from_row(row)?;
            states.insert(state.order_id(), state);
        }
    }
    Ok(states)
}

pub(super) async fn load_parked(
    conn: &mut AnyConnection,
    group: &str,
    ids: &[Uuid],
) -> Result<HashSet<Uuid>, StoreError> {
    let mut parked = HashSet::new();
    for chunk in ids.chunks(CHUNK) {
        let mut q = Sql::new("SELECT DISTINCT order_id FROM dead_letters WHERE status = 'parked' AND group_id = ");
        q.bind(group.to_string()).push(" AND order_id IN ").list(chunk.iter().map(Uuid::to_string));
        for row in q.fetch_all(&mut *conn).await? {
            let id: String = row.try_get("order_id")?;
            parked.extend(Uuid::parse_str(&id).ok());
        }
    }
    Ok(parked)
}

pub(super) async fn write_states<S: StoredState>(
    conn: &mut AnyConnection,
    table: &str,
    states: &[&S],
) -> Result<(), StoreError> {
    for chunk in states.chunks(CHUNK) {
        let mut q = Sql::new(format!("INSERT INTO {table} ({}) ", S::COLUMNS.join(", ")));
        q.values(chunk, |v, s| s.push_binds(v));
        let updates: Vec<String> = S::COLUMNS[1..].iter().map(|c| format!("{c} = excluded.{c}")).collect();
        q.push(&format!(" ON CONFLICT (order_id) DO UPDATE SET {}", updates.join(", ")));
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Stock changes are added, never overwritten, so members projecting different partitions
/// can change the same SKU concurrently. Rows are written in SKU order, so concurrent
/// batches lock them in the same order and cannot deadlock.
pub(super) async fn write_sku_deltas(
    conn: &mut AnyConnection,
    table: &str,
    sku: &BTreeMap<String, SkuDelta>,
) -> Result<(), StoreError> {
    let rows: Vec<(&String, &SkuDelta)> = sku.iter().collect();
    for chunk in rows.chunks(CHUNK) {
        let mut q = Sql::new(format!("INSERT INTO {table} (sku, on_hand, reserved, shipped) "));
        q.values(chunk, |v, (s, d)| {
            v.bind((*s).clone()).bind(d.on_hand).bind(d.reserved).bind(d.shipped);
        });
        q.push(&format!(
            " ON CONFLICT (sku) DO UPDATE SET on_hand = {table}.on_hand + excluded.on_hand,
              reserved = {table}.reserved + excluded.reserved, shipped = {table}.shipped + excluded.shipped"
        ));
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

async fn write_dead_letters(
    conn: &mut AnyConnection,
    group: &str,
    topic: &str,
    dead: &[DeadLetter<'_>],
    now_ms: i64,
) -> Result<(), StoreError> {
    for chunk in dead.chunks(CHUNK) {
        let mut q = Sql::new(
            "INSERT INTO dead_letters (group_id, topic, partition_id, record_offset, record_key, order_id, reason, payload, created_at_ms) ",
        );
        q.values(chunk, |v, d| {
            v.bind(group.to_string())
                .bind(topic.to_string())
                .bind(i64::from(d.record.partition))
                .bind(d.record.offset)
                .bind(d.record.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()))
                .bind(d.order_id.map(|id| id.to_string()))
                .bind(d.reason.clone())
                .bind(d.record.payload.clone())
                .bind(now_ms);
        });
        q.push(" ON CONFLICT (group_id, topic, partition_id, record_offset) DO NOTHING");
        q.execute(&mut *conn).await?;
    }
    Ok(())
}
