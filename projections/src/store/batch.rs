//! One batch of log records → one database transaction that applies their effects and
//! advances the stored offsets together (see `DESIGN.md`, "Exactly-once effects"):
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
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use schemas::{Codec, Event};
use sqlx::{Any, Database, Postgres, Transaction};
use uuid::Uuid;

use super::connection::Store;
use super::dead_letters::{self, NewDeadLetter};
use super::error::StoreError;
use super::fault::{hit, FaultPoint};
use super::fold::{claim_event_ids, decode_with, AppendedRows, Decoded, Fold, Folded, StoredProjection};
use super::handovers::{Admission, Verdict};
use super::offsets::{self, Lock};
use super::records::{Batch, BatchOutcome, LogRecord};
use super::sql::{Exec, Sql, Value};
use crate::model::LogPosition;

/// The records of a batch that are not applied yet, and where each partition goes next.
pub(super) struct Fresh<'a> {
    pub records: Vec<&'a LogRecord>,
    /// Where each of `records` is in the batch.
    pub indices: Vec<usize>,
    pub next: BTreeMap<i32, i64>,
    /// The timestamp of each partition's last fresh record.
    pub last_timestamps: BTreeMap<i32, Option<i64>>,
    rewind: BTreeMap<i32, i64>,
    already_applied: usize,
}

/// Step 1 after locking: keeps the records at or above the stored offset; a partition
/// whose reading started above its stored offset is left out entirely (and rewound).
fn fresh_records<'a>(
    records: &'a [LogRecord],
    stored: &HashMap<i32, i64>,
    read_from: &BTreeMap<i32, i64>,
) -> Fresh<'a> {
    let mut fresh = Fresh {
        records: Vec::with_capacity(records.len()),
        indices: Vec::with_capacity(records.len()),
        next: BTreeMap::new(),
        last_timestamps: BTreeMap::new(),
        rewind: BTreeMap::new(),
        already_applied: 0,
    };
    for (index, r) in records.iter().enumerate() {
        if fresh.rewind.contains_key(&r.partition) {
            continue;
        }
        let stored_offset = stored.get(&r.partition).copied().unwrap_or(r.offset);
        if !fresh.next.contains_key(&r.partition) {
            let start = read_from.get(&r.partition).copied().unwrap_or(r.offset);
            if start > stored_offset {
                // Records between the stored offset and where this member started reading
                // would be skipped: apply nothing of this partition and have the member
                // read it again from the stored offset.
                tracing::warn!(
                    partition = r.partition,
                    stored = stored_offset,
                    read_from = start,
                    "A batch starts above the stored offset. Nothing of it is applied; the member reads the partition again from the stored offset."
                );
                fresh.rewind.insert(r.partition, stored_offset);
                continue;
            }
        }
        if r.offset < fresh.next.get(&r.partition).copied().unwrap_or(stored_offset) {
            fresh.already_applied += 1;
            continue;
        }
        fresh.next.insert(r.partition, r.offset + 1);
        fresh.last_timestamps.insert(r.partition, r.timestamp_ms);
        fresh.records.push(r);
        fresh.indices.push(index);
    }
    fresh
}

impl Store {
    /// Applies a batch through projection `P` in one transaction, with its offsets.
    pub(super) async fn apply_batch<P: StoredProjection>(
        &self,
        batch: &Batch<'_>,
        codec: &Codec,
    ) -> Result<BatchOutcome, StoreError> {
        let decoded = DecodedRecords::for_projection::<P>(codec, batch.records, batch.role);
        self.apply_decoded_batch::<P>(batch, decoded).await
    }

    /// `apply_batch` with the records decoded beforehand ([`DecodedRecords::of`],
    /// pure, so a member can decode the next batch while this one is written). On
    /// PostgreSQL the batch runs on a native connection, whose rows go by binary `COPY`.
    #[tracing::instrument(skip_all, fields(group = batch.group, records = batch.records.len()))]
    pub(super) async fn apply_decoded_batch<P: StoredProjection>(
        &self,
        batch: &Batch<'_>,
        decoded: DecodedRecords,
    ) -> Result<BatchOutcome, StoreError> {
        if batch.records.is_empty() {
            return Ok(BatchOutcome::default());
        }
        if decoded.0.len() != batch.records.len() {
            return Err(StoreError::Invalid(format!(
                "{} records decoded for a batch of {}",
                decoded.0.len(),
                batch.records.len()
            )));
        }
        let generation = self.generation_of(batch.group).await?;
        hit(FaultPoint::BeforeTransaction);
        match &self.bulk {
            Some(pool) => {
                let tx = pool.begin().await?;
                self.apply_in::<P, Postgres>(tx, generation, batch, decoded).await
            }
            None => {
                // Rows in `COPY`'s form are of no use without `COPY`.
                let decoded = DecodedRecords(decoded.0, None);
                let tx = self.begin_write().await?;
                self.apply_in::<P, Any>(tx, generation, batch, decoded).await
            }
        }
    }

    /// Steps 1–7 of a projection's batch in `tx`.
    async fn apply_in<P: StoredProjection, DB: Database<Connection: Exec>>(
        &self,
        tx: Transaction<'static, DB>,
        generation: i64,
        batch: &Batch<'_>,
        mut decoded: DecodedRecords,
    ) -> Result<BatchOutcome, StoreError> {
        // 1.–3. Ids that no order row keeps are looked up in `processed_events` now; those
        // of events with an order are known once its row is loaded.
        let rows_keep_ids = <P::State as super::rows::StoredState>::KEEPS_EVENT_IDS;
        // An append-only table is keyed by order and event id: its rows are their own
        // duplicate guard, and nothing of such a batch goes to `processed_events`.
        let append_only = <P::State as super::rows::StoredState>::APPEND_ONLY;
        let claim_now = |e: &Event| !append_only && (!rows_keep_ids || e.order_id().is_none());
        let appended = decoded.1.take();
        let mut open = match self.open_batch_in(tx, batch, decoded, claim_now).await? {
            Ok(open) => open,
            Err(done) => return Ok(done),
        };
        let conn: &mut DB::Connection = &mut open.tx;
        if shares_state::<P>() {
            // A projection's batch reads and writes only its orders' rows (the one that
            // shares state, the fulfilment, keeps no SKU rows).
            lock_orders_of_batch(conn, batch.group, open.stored.keys().copied(), &open.order_ids).await?;
        }

        // 4. Load state; the events of rows from before rows kept ids are looked up in
        // `processed_events` as before.
        let order_ids: Vec<Uuid> = open.order_ids.iter().copied().collect();
        let mut fold = Fold::<P>::load(conn, generation, &order_ids).await?.with_appended(appended);
        if rows_keep_ids {
            drop_duplicates(
                conn,
                batch.group,
                &mut open.events,
                &mut open.outcome,
                |e| e.order_id().is_some() && fold.needs_claim(e),
                false,
            )
            .await?;
        }
        let Opened { events, dead, refused, parked, outcome, .. } = &mut open;
        let mut events = std::mem::take(events);
        // The fault-injection refusal hits a batch holding that record as an event.
        let refusing = super::fault::refused_offset().is_some_and(|o| events.iter().any(|(r, _)| r.offset == o));

        // 5. Fold, in log order per partition.
        for (record, event) in events.drain(..) {
            let order_id = event.order_id();
            if held_back(parked, dead, record, order_id) {
                continue;
            }
            let at = LogPosition { partition: record.partition, offset: record.offset };
            match fold.apply(&event, at, record.published_by.as_deref()) {
                Ok(Folded::Applied) => outcome.applied += 1,
                Ok(Folded::Duplicate) => outcome.duplicates += 1,
                Err(rejection) => refused.push(NewDeadLetter::refused(record, order_id, rejection)),
            }
        }

        // 6. Write.
        let conn: &mut DB::Connection = &mut open.tx;
        if refusing {
            refuse(conn).await?;
        }
        let copies = fold.write(conn, &self.pool_of(batch.group)).await? as usize;
        open.outcome.applied = open.outcome.applied.saturating_sub(copies);
        open.outcome.duplicates += copies;
        open.outcome.dead_lettered = open.dead.len() + open.refused.len();
        dead_letters::insert(conn, batch.group, batch.topic, &open.dead, open.now_ms).await?;
        dead_letters::insert_refused(conn, batch.group, batch.topic, &open.refused, open.now_ms).await?;
        commit_batch(open.tx, batch, open.stored, open.fresh, open.now_ms, open.outcome).await
    }
}

/// Whether projection `P`'s state is changed by batches of more than one topic.
fn shares_state<P: StoredProjection>() -> bool {
    P::NAME
        .parse::<crate::registry::ProjectionKind>()
        .is_ok_and(|kind| crate::registry::GroupKind::from(kind).shares_state_across_topics())
}

/// What steps 1–3 leave a batch to fold: the transaction holding its offset rows, the
/// fresh records decoded (event ids seen before dropped), the records already set aside,
/// the orders they touch and which of those are parked, and the counts so far.
pub(super) struct Opened<'r, DB: Database = Any> {
    pub tx: Transaction<'static, DB>,
    pub stored: HashMap<i32, i64>,
    pub fresh: Fresh<'r>,
    pub events: Vec<(&'r LogRecord, Event)>,
    pub dead: Vec<NewDeadLetter<'r>>,
    /// Records of a kind not trusted from this topic: recorded, already resolved.
    pub refused: Vec<NewDeadLetter<'r>>,
    pub order_ids: BTreeSet<Uuid>,
    pub parked: Parked,
    pub outcome: BatchOutcome,
    pub now_ms: i64,
}

impl Store {
    /// Steps 1–3 of a batch of the kinds `wants` accepts, and the parked orders: the open
    /// batch, or (`Err`) its outcome when nothing is left to apply (every record fenced).
    pub(super) async fn open_batch<'r>(
        &self,
        batch: &Batch<'r>,
        decoded: DecodedRecords,
        claim_now: impl Fn(&Event) -> bool,
    ) -> Result<Result<Opened<'r>, BatchOutcome>, StoreError> {
        hit(FaultPoint::BeforeTransaction);
        let tx = self.begin_write().await?;
        self.open_batch_in(tx, batch, decoded, claim_now).await
    }

    /// [`Store::open_batch`] in a transaction begun already.
    pub(super) async fn open_batch_in<'r, DB: Database<Connection: Exec>>(
        &self,
        mut tx: Transaction<'static, DB>,
        batch: &Batch<'r>,
        decoded: DecodedRecords,
        claim_now: impl Fn(&Event) -> bool,
    ) -> Result<Result<Opened<'r, DB>, BatchOutcome>, StoreError> {
        let mut outcome = BatchOutcome::default();
        let conn: &mut DB::Connection = &mut tx;
        let now_ms = schemas::clock::now_ms();
        let (stored, mut fresh) = self.lock_offsets_and_filter(conn, batch, now_ms, &mut outcome).await?;
        if fresh.records.is_empty() {
            return nothing_fresh(tx, stored, outcome).await.map(Err);
        }
        let log_region = self.pool_of(batch.group);
        let partitions: BTreeSet<i32> = fresh.records.iter().map(|r| r.partition).collect();
        let admission = Admission::load(
            conn,
            self.region.as_deref(),
            batch.group,
            batch.topic,
            &log_region,
            partitions.into_iter(),
        )
        .await?;
        let (mut events, dead, refused) = decode_fresh(decoded, &mut fresh, &admission, &mut outcome);
        if fresh.records.is_empty() {
            return nothing_fresh(tx, stored, outcome).await.map(Err);
        }
        drop_duplicates(conn, batch.group, &mut events, &mut outcome, claim_now, true).await?;
        let order_ids: BTreeSet<Uuid> =
            events.iter().filter_map(|(_, e)| e.order_id()).chain(dead.iter().filter_map(|d| d.order_id)).collect();
        let ids: Vec<Uuid> = order_ids.iter().copied().collect();
        let mut parked =
            Parked { before: dead_letters::parked_orders(conn, batch.group, &ids).await?, ..Parked::default() };
        for d in &dead {
            if let Some(order) = d.order_id {
                let first = parked.from.entry(order).or_insert(d.record.offset);
                *first = (*first).min(d.record.offset);
            }
        }
        Ok(Ok(Opened { tx, stored, fresh, events, dead, refused, order_ids, parked, outcome, now_ms }))
    }
}

/// Serializes a batch (or a round of timers) with the batches of the group's other topics
/// on the same partition numbers, for a group whose state the batches of several topics
/// read, change and write back ([`crate::registry::GroupKind::shares_state_across_topics`]):
/// an order's facts and its decisions (a SKU's requests and its adjustments) share a
/// partition number, since the pipeline's topics have one partition count and one key per
/// order (per SKU), so two transactions that could touch one order's row take one lock
/// first, in partition order (no deadlock), held until commit. Without it two members
/// could both load a row, and the later commit would drop the earlier one's change.
/// PostgreSQL only: SQLite's `BEGIN IMMEDIATE` already serializes every writer.
pub(super) async fn lock_partition_numbers<C: Exec>(
    conn: &mut C,
    group: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> Result<(), StoreError> {
    if !conn.is_postgres() {
        return Ok(());
    }
    let partitions: BTreeSet<i32> = partitions.into_iter().collect();
    if partitions.is_empty() {
        return Ok(());
    }
    // One statement for all of them (a round trip each was up to twelve per batch). The
    // sorted subquery is not flattened into the outer one, so the locks are taken in
    // partition order, one row at a time.
    let mut q = Sql::new("SELECT pg_advisory_xact_lock(hashtext(");
    q.bind(group.to_string()).push("), CAST(p AS INTEGER)) FROM (SELECT p FROM unnest(");
    q.bind(Value::IntArray(partitions.into_iter().map(|p| Some(i64::from(p))).collect()));
    q.push("::bigint[]) AS u(p) ORDER BY p) AS s");
    q.execute(&mut *conn).await?;
    Ok(())
}

/// Up to this many orders, a batch of the order process or the fulfilment locks the orders
/// it touches instead of its partitions whole (see [`lock_orders_of_batch`]); a batch with
/// more (far behind, a backlog's) locks the partitions, so no transaction holds thousands of
/// locks.
const ORDER_LOCKS_MAX: usize = 256;

/// [`lock_partition_numbers`] for a batch whose every read and write is of the rows of
/// `orders` (the order process's, the fulfilment's): its partition numbers are locked shared
/// and each order exclusively, so the batches of the group's two topics wait for each other
/// only where they share an order (they waited on every batch of the other topic whose
/// partitions overlapped: in the order process, 10% of batches waited 18 ms or more at 1,000
/// orders/s). A round of timers, which may touch any order of its partitions, still takes
/// the partitions exclusively and so waits for the batches on them, and they for it. Every
/// locker takes partitions before orders, each in ascending order, so no two wait for each
/// other in a circle. An order's key is its id's first four bytes (every member computes the
/// same one; two orders sharing a key only wait for each other needlessly). PostgreSQL only,
/// like the partition locks.
pub(super) async fn lock_orders_of_batch<C: Exec>(
    conn: &mut C,
    group: &str,
    partitions: impl IntoIterator<Item = i32>,
    orders: &BTreeSet<Uuid>,
) -> Result<(), StoreError> {
    if !conn.is_postgres() {
        return Ok(());
    }
    if orders.len() > ORDER_LOCKS_MAX {
        return lock_partition_numbers(conn, group, partitions).await;
    }
    let partitions: BTreeSet<i32> = partitions.into_iter().collect();
    if partitions.is_empty() {
        return Ok(());
    }
    let keys: BTreeSet<i32> = orders.iter().map(|id| order_lock_key(*id)).collect();
    // One statement; its sorted subquery is not flattened, so the locks are taken one row at
    // a time in (kind, key) order: partitions first.
    let mut q = Sql::new("SELECT CASE WHEN s.kind = 0 THEN pg_advisory_xact_lock_shared(hashtext(");
    q.bind(group.to_string()).push("), s.v) ELSE pg_advisory_xact_lock(hashtext(");
    q.bind(format!("{group}:orders")).push("), s.v) END FROM (SELECT 0 AS kind, CAST(p AS INTEGER) AS v FROM unnest(");
    q.bind(Value::IntArray(partitions.into_iter().map(|p| Some(i64::from(p))).collect()));
    q.push("::bigint[]) AS u(p) UNION ALL SELECT 1, CAST(k AS INTEGER) FROM unnest(");
    q.bind(Value::IntArray(keys.into_iter().map(|k| Some(i64::from(k))).collect()));
    q.push("::bigint[]) AS w(k) ORDER BY 1, 2) AS s");
    q.execute(&mut *conn).await?;
    Ok(())
}

/// An order's advisory lock key: the first four bytes of its id (random in a v4 id).
fn order_lock_key(order: Uuid) -> i32 {
    let b = order.as_bytes();
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The orders whose events are held back: parked by an earlier batch, or from the offset of
/// a record of this batch that is parked (its events before that record are applied).
#[derive(Debug, Default)]
pub(super) struct Parked {
    pub before: HashSet<Uuid>,
    pub from: HashMap<Uuid, i64>,
}

impl Parked {
    fn holds(&self, order: Uuid, offset: i64) -> bool {
        self.before.contains(&order) || self.from.get(&order).is_some_and(|first| *first < offset)
    }
}

/// Parks `record` if an earlier event of its order is parked (nothing is applied out of
/// order around a parked event); says whether it did.
pub(super) fn held_back<'r>(
    parked: &Parked,
    dead: &mut Vec<NewDeadLetter<'r>>,
    record: &'r LogRecord,
    order_id: Option<Uuid>,
) -> bool {
    let Some(id) = order_id.filter(|id| parked.holds(*id, record.offset)) else { return false };
    let reason = "parked: an earlier event of this order is in dead_letters".to_string();
    dead.push(NewDeadLetter { record, order_id: Some(id), reason });
    true
}

/// The end of every batch, projection or process, once its effects are written: the
/// offsets advance in the same transaction, which commits; the outcome says where each
/// partition goes next. The fault points around it are the crash tests' places.
pub(super) async fn commit_batch<DB: Database<Connection: Exec>>(
    mut tx: Transaction<'static, DB>,
    batch: &Batch<'_>,
    stored: HashMap<i32, i64>,
    fresh: Fresh<'_>,
    now_ms: i64,
    mut outcome: BatchOutcome,
) -> Result<BatchOutcome, StoreError> {
    hit(FaultPoint::AfterProjectionWrite);
    offsets::advance(&mut *tx, batch.group, batch.topic, &fresh.next, &fresh.last_timestamps, now_ms).await?;
    hit(FaultPoint::AfterOffsetUpdate);
    tx.commit().await?;
    hit(FaultPoint::AfterCommit);
    let mut all: BTreeMap<i32, i64> = stored.into_iter().collect();
    all.extend(fresh.next);
    outcome.next_offsets = all.into_iter().collect();
    Ok(outcome)
}

/// A batch whose records were all applied before (a fenced zombie): nothing changes.
pub(super) async fn nothing_fresh<DB: Database>(
    tx: Transaction<'static, DB>,
    stored: HashMap<i32, i64>,
    mut outcome: BatchOutcome,
) -> Result<BatchOutcome, StoreError> {
    tx.rollback().await?;
    outcome.next_offsets = stored.into_iter().collect::<BTreeMap<_, _>>().into_iter().collect();
    Ok(outcome)
}

impl Store {
    /// Step 1 of a batch: creates missing offset rows at the batch's first offset (no row =
    /// the start of the log), locks them so a concurrent member waits for us or we for it,
    /// and keeps the records not applied yet (counting in `outcome` what it left out).
    pub(super) async fn lock_offsets_and_filter<'a, C: Exec>(
        &self,
        conn: &mut C,
        batch: &Batch<'a>,
        now_ms: i64,
        outcome: &mut BatchOutcome,
    ) -> Result<(HashMap<i32, i64>, Fresh<'a>), StoreError> {
        let mut firsts: BTreeMap<i32, i64> = BTreeMap::new();
        for r in batch.records {
            firsts.entry(r.partition).or_insert(r.offset);
        }
        let partitions: Vec<i32> = firsts.keys().copied().collect();
        // A partition's row is made once, by the group's first batch there, so nearly every
        // batch finds all of its rows and locks them in this one round trip. Rows are made
        // (in partition order, as are concurrent makers') only for those not found; their
        // lock follows: a row another member made meanwhile is read as that one committed it.
        let mut stored: HashMap<i32, i64> =
            offsets::read(conn, self.dialect, batch.group, batch.topic, Some(&partitions), Lock::ForUpdate)
                .await?
                .into_iter()
                .collect();
        let missing: BTreeMap<i32, i64> =
            firsts.iter().filter(|(p, _)| !stored.contains_key(p)).map(|(p, first)| (*p, *first)).collect();
        if !missing.is_empty() {
            offsets::insert_missing(conn, batch.group, batch.topic, &missing, now_ms).await?;
            let made: Vec<i32> = missing.keys().copied().collect();
            stored.extend(
                offsets::read(conn, self.dialect, batch.group, batch.topic, Some(&made), Lock::ForUpdate).await?,
            );
        }
        let fresh = fresh_records(batch.records, &stored, batch.read_from);
        outcome.already_applied = fresh.already_applied;
        outcome.rewind = fresh.rewind.iter().map(|(p, o)| (*p, *o)).collect();
        Ok((stored, fresh))
    }

    /// Parks the records of `batch` — in practice the one a member found by bisecting a
    /// batch the database refused — with the database's `reason`, and moves the offsets
    /// past them, in one transaction: one record the database cannot store must not stop
    /// its partition. Their orders' later events park behind them, as for any dead letter.
    #[tracing::instrument(skip_all, fields(group = batch.group, records = batch.records.len()))]
    pub(super) async fn park_refused(
        &self,
        batch: &Batch<'_>,
        codec: &Codec,
        reason: &str,
    ) -> Result<BatchOutcome, StoreError> {
        let mut outcome = BatchOutcome::default();
        let mut tx = self.begin_write().await?;
        let now_ms = schemas::clock::now_ms();
        let (stored, fresh) = self.lock_offsets_and_filter(&mut *tx, batch, now_ms, &mut outcome).await?;
        let conn: &mut sqlx::AnyConnection = &mut tx;
        let dead: Vec<NewDeadLetter> = fresh
            .records
            .iter()
            .map(|r| {
                let event = r.payload.as_deref().and_then(|p| codec.decode(p).ok());
                let mut letter = NewDeadLetter::keyed(r, format!("the database refused it: {reason}"));
                letter.order_id = event.and_then(|e| e.order_id()).or(letter.order_id);
                letter
            })
            .collect();
        outcome.dead_lettered = dead.len();
        dead_letters::insert(conn, batch.group, batch.topic, &dead, now_ms).await?;
        offsets::advance(conn, batch.group, batch.topic, &fresh.next, &fresh.last_timestamps, now_ms).await?;
        tx.commit().await?;
        let mut all: BTreeMap<i32, i64> = stored.into_iter().collect();
        all.extend(fresh.next);
        outcome.next_offsets = all.into_iter().collect();
        Ok(outcome)
    }
}

/// Every record of a batch decoded for one reader (the kinds it reads), in the batch's
/// order. Decoding is pure: a member does it for the next batch while the previous one is
/// being written.
/// From this many records a batch is decoded on several threads.
const PARALLEL_DECODE_MIN: usize = 2_000;

#[derive(Default)]
pub struct DecodedRecords(Vec<Decoded>, Option<AppendedRows>);

impl DecodedRecords {
    pub fn of(
        codec: &Codec,
        records: &[LogRecord],
        wants: impl Fn(schemas::EventKind) -> bool,
        role: schemas::TopicRole,
    ) -> Self {
        DecodedRecords(
            records.iter().map(|r| decode_with(codec, r.key.as_deref(), r.payload.as_deref(), &wants, role)).collect(),
            None,
        )
    }

    /// [`DecodedRecords::of`] for projection `P`; an append-only projection's rows are
    /// built here too, in `COPY`'s binary form, from what each record alone decides (see
    /// [`AppendedRows`]), while the batch before is being written.
    ///
    /// A large batch is decoded in slices on as many threads as the machine has cores:
    /// far behind, decoding is what a member waits for between two writes.
    pub fn for_projection<P: StoredProjection>(codec: &Codec, records: &[LogRecord], role: schemas::TopicRole) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        let prebuild =
            <P::State as super::rows::StoredState>::APPEND_ONLY && records.len() >= super::fold::COPY_MIN_ROWS;
        if threads < 2 || records.len() < PARALLEL_DECODE_MIN {
            return Self::decode_slice::<P>(codec, records, role, prebuild);
        }
        let slice = records.len().div_ceil(threads);
        let parts: Vec<Self> = std::thread::scope(|scope| {
            let handles: Vec<_> = records
                .chunks(slice)
                .map(|chunk| scope.spawn(move || Self::decode_slice::<P>(codec, chunk, role, prebuild)))
                .collect();
            // A decoding thread cannot panic on a record's bytes (every error is a value);
            // were it to, the batch is decoded again here, on this thread.
            handles.into_iter().map(|h| h.join().ok()).collect::<Option<Vec<_>>>()
        })
        .unwrap_or_else(|| vec![Self::decode_slice::<P>(codec, records, role, prebuild)]);
        let mut whole = DecodedRecords(Vec::with_capacity(records.len()), None);
        for part in parts {
            whole.0.extend(part.0);
            if let Some(rows) = part.1 {
                whole.1.get_or_insert_with(AppendedRows::default).extend(rows);
            }
        }
        whole
    }

    fn decode_slice<P: StoredProjection>(
        codec: &Codec,
        records: &[LogRecord],
        role: schemas::TopicRole,
        prebuild: bool,
    ) -> Self {
        let mut decoded = Self::of(codec, records, P::wants, role);
        if prebuild {
            decoded.1 = Some(AppendedRows::build::<P>(records, &decoded.0));
        }
        decoded
    }
}

/// Step 2: the fresh records' events of the kinds the reader reads; undecodable ones
/// become dead letters, untrusted ones refused records. Whether an event about an order of
/// some region belongs on this log is [`Admission`]'s call: refused (a writer that
/// bypassed its checkout, a lost region's late tail, a record under the wrong epoch), or
/// held back with its partition's later records until the copy before a takeover's cut is
/// applied (the member reads them again from there).
fn decode_fresh<'r>(
    mut decoded: DecodedRecords,
    fresh: &mut Fresh<'r>,
    admission: &Admission,
    outcome: &mut BatchOutcome,
) -> (Vec<(&'r LogRecord, Event)>, Vec<NewDeadLetter<'r>>, Vec<NewDeadLetter<'r>>) {
    let mut dead = Vec::new();
    let mut refused = Vec::new();
    let mut events = Vec::with_capacity(fresh.records.len());
    let mut held: BTreeMap<i32, i64> = BTreeMap::new();
    for (r, index) in fresh.records.iter().zip(&fresh.indices) {
        if held.contains_key(&r.partition) {
            continue;
        }
        // Each record once: its decoding is moved out, not copied.
        match std::mem::replace(&mut decoded.0[*index], Decoded::Ignored) {
            Decoded::Ignored => outcome.ignored += 1,
            Decoded::Event(event) => match admission.verdict(r, &event) {
                Verdict::Apply => events.push((*r, event)),
                Verdict::Refuse(reason) => refused.push(NewDeadLetter { record: r, order_id: None, reason }),
                Verdict::Hold => {
                    held.insert(r.partition, r.offset);
                }
            },
            Decoded::Undecodable(reason) => dead.push(NewDeadLetter::keyed(r, reason)),
            // Recorded under no order: a forged record must not hold a real order back.
            Decoded::Refused(reason) => refused.push(NewDeadLetter { record: r, order_id: None, reason }),
        }
    }
    if !held.is_empty() {
        hold_back(fresh, &held, outcome);
        let kept = |r: &LogRecord| held.get(&r.partition).is_none_or(|from| r.offset < *from);
        events.retain(|(r, _)| kept(r));
        dead.retain(|d| kept(d.record));
        refused.retain(|d| kept(d.record));
    }
    (events, dead, refused)
}

/// Leaves each held partition's records from its held offset on out of the batch: its
/// offset advances to there, and the member reads it again from there.
fn hold_back(fresh: &mut Fresh<'_>, held: &BTreeMap<i32, i64>, outcome: &mut BatchOutcome) {
    let mut kept_records = Vec::with_capacity(fresh.records.len());
    let mut kept_indices = Vec::with_capacity(fresh.indices.len());
    let mut last_timestamps: BTreeMap<i32, Option<i64>> = BTreeMap::new();
    for (r, index) in fresh.records.iter().zip(&fresh.indices) {
        if held.get(&r.partition).is_some_and(|from| r.offset >= *from) {
            continue;
        }
        last_timestamps.insert(r.partition, r.timestamp_ms);
        kept_records.push(*r);
        kept_indices.push(*index);
    }
    for (partition, from) in held {
        if last_timestamps.contains_key(partition) {
            fresh.next.insert(*partition, *from);
        } else {
            fresh.next.remove(partition);
        }
        outcome.rewind.push((*partition, *from));
    }
    for (partition, timestamp) in last_timestamps {
        fresh.last_timestamps.insert(partition, timestamp);
    }
    fresh.last_timestamps.retain(|p, _| fresh.next.contains_key(p));
    fresh.records = kept_records;
    fresh.indices = kept_indices;
}

/// The region other than `log_region` that `event`'s order names as its home, if any.
pub(super) fn homed_elsewhere(event: &Event, log_region: &str) -> Option<schemas::Region> {
    if log_region.is_empty() {
        return None;
    }
    schemas::Region::home_of(&event.order_id()?).filter(|home| home.as_str() != log_region)
}

/// Step 3: keeps each event id once (`within_batch`: the first time this batch is
/// looked at), and of the events `claim` picks only those whose id
/// this group has not applied before (`processed_events`; a retried publish that landed
/// twice is applied once). The others' ids are kept on their order rows (see `Fold`).
pub(super) async fn drop_duplicates<C: Exec>(
    conn: &mut C,
    group: &str,
    events: &mut Vec<(&LogRecord, Event)>,
    outcome: &mut BatchOutcome,
    claim: impl Fn(&Event) -> bool,
    within_batch: bool,
) -> Result<(), StoreError> {
    let ids: Vec<String> =
        events.iter().filter(|(_, e)| claim(e)).map(|(_, e)| e.envelope().event_id.to_string()).collect();
    if ids.is_empty() && !within_batch {
        return Ok(());
    }
    let new_ids = if ids.is_empty() { HashSet::new() } else { claim_event_ids(conn, group, &ids).await? };
    let mut seen: HashSet<Uuid> = HashSet::with_capacity(events.len());
    events.retain(|(_, e)| {
        let id = e.envelope().event_id;
        let keep = (!claim(e) || new_ids.contains(&id.to_string())) && (!within_batch || seen.insert(id));
        if !keep {
            outcome.duplicates += 1;
        }
        keep
    });
    Ok(())
}

/// The `ORDERFLOW_FAULT_REFUSE_OFFSET` fault: a statement the database refuses as it
/// refuses an unstorable value (NOT NULL violation: SQLSTATE 23502, SQLite 1299).
async fn refuse<C: Exec>(conn: &mut C) -> Result<(), StoreError> {
    use super::sql::Sql;
    Sql::new("CREATE TEMPORARY TABLE IF NOT EXISTS fault_refusal (value BIGINT NOT NULL)").execute(conn).await?;
    Sql::new("INSERT INTO fault_refusal (value) VALUES (NULL)").execute(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use schemas::samples::{readdressed, sample};
    use schemas::{EventKind, Region};

    use super::homed_elsewhere;

    #[test]
    fn an_event_of_an_order_homed_in_another_region_is_refused_on_this_regions_log() {
        let eu = Region::parse("eu").expect("region");
        let payment = readdressed(sample(EventKind::PaymentCaptured), eu.order_id([7; 16]));
        assert_eq!(homed_elsewhere(&payment, "us"), Some(eu.clone()));
        assert_eq!(homed_elsewhere(&payment, "eu"), None, "its home's log");
        assert_eq!(homed_elsewhere(&payment, ""), None, "one region: no homes to check");
        let unhomed = readdressed(sample(EventKind::PaymentCaptured), uuid::Uuid::new_v4());
        assert_eq!(homed_elsewhere(&unhomed, "us"), None, "an id naming no home belongs to the log it is on");
    }
}
