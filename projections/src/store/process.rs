//! The batches of the two process groups, the order process's timers and the outbox.
//!
//! A process batch is a projection batch whose effects include events to publish: the
//! same transaction locks the offsets, drops records already applied and event ids seen
//! before, loads the touched state, folds the pure decisions in log order, writes the
//! state, puts the decided events into `outbox`, parks what cannot be decided, advances
//! the offsets and commits. A crash anywhere before the commit leaves no decision and no
//! outbox row; after it, both are there once. The relay publishes the outbox later; a
//! decision is therefore never lost and never taken twice, and its event ids are derived
//! from its cause, so a re-publication is dropped by every reader.
use std::collections::{BTreeSet, HashMap};

use schemas::{Codec, Event};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use super::batch::Opened;
use super::connection::{Dialect, Store};
use super::dead_letters::{self, NewDeadLetter};
use super::error::StoreError;
use super::fault::{hit, FaultPoint};
use super::fold::CHUNK;
use super::offsets::{self, Lock};
use super::records::{Batch, BatchOutcome, LogRecord};
use super::roles::{Operations, Outbox, Reads};
use super::sql::Sql;
use crate::model::Rejection;
use crate::process::order::{self, Input, Line, OrderFlow, OrderStatus};
use crate::process::stock::{self, Hold, HoldStatus, SkuStock};
use crate::process::{Context, ProcessSettings, ORDER_PROCESS_PRINCIPAL};
use crate::registry::ProcessKind;

/// One event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub seq: i64,
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub published_by: String,
    /// The ownership epoch to publish it under (1: this region's own order).
    pub epoch: u32,
    /// The trace context of the decision that emitted it, if its cause carried one.
    pub trace_parent: Option<String>,
}

/// An order's status as the `order_status` view shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct OrderStatusRow {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub reason: Option<String>,
    /// RFC 3339.
    pub updated_at: String,
}

/// Orders in one status of the order process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DecisionCount {
    pub status: OrderStatus,
    pub orders: i64,
}

const ORDER_COLUMNS: [&str; 10] = [
    "order_id",
    "status",
    "reason",
    "correlation_id",
    "lines",
    "captured_minor",
    "refund_requested_minor",
    "partition_id",
    "due_at_us",
    "updated_at_us",
];

fn corrupt(table: &'static str, reason: impl ToString) -> StoreError {
    StoreError::CorruptRow { table, reason: reason.to_string() }
}

fn flow_of(row: &AnyRow) -> Result<(OrderFlow, i32), StoreError> {
    const T: &str = "process_orders";
    let uuid = |column: &str| -> Result<Uuid, StoreError> {
        let raw: String = row.try_get(column)?;
        Uuid::parse_str(&raw).map_err(|e| corrupt(T, e))
    };
    let status: String = row.try_get("status")?;
    let lines: String = row.try_get("lines")?;
    let flow = OrderFlow {
        order_id: uuid("order_id")?,
        status: OrderStatus::parse(&status).ok_or_else(|| corrupt(T, format!("status {status:?}")))?,
        reason: row.try_get("reason")?,
        correlation_id: uuid("correlation_id")?,
        lines: serde_json::from_str::<Vec<Line>>(&lines).map_err(|e| corrupt(T, e))?,
        captured_minor: row.try_get("captured_minor")?,
        refund_requested_minor: row.try_get("refund_requested_minor")?,
        payment_due_us: row.try_get("due_at_us")?,
        updated_at_us: row.try_get("updated_at_us")?,
    };
    Ok((flow, row.try_get::<i64, _>("partition_id")? as i32))
}

fn for_update(q: &mut Sql, dialect: Dialect) {
    if dialect == Dialect::Postgres {
        q.push(" FOR UPDATE");
    }
}

/// The order process's state for a set of orders, as it is folded.
#[derive(Default)]
struct Orders {
    states: HashMap<Uuid, (OrderFlow, i32)>,
    dirty: BTreeSet<Uuid>,
}

impl Orders {
    /// Loads (and on PostgreSQL locks, in order-id order) the rows of `ids`. The partition
    /// owner is the only writer of an order; the lock covers the moment partitions are
    /// added and an order's events change partition.
    async fn load(conn: &mut AnyConnection, dialect: Dialect, ids: &BTreeSet<Uuid>) -> Result<Self, StoreError> {
        let mut orders = Orders::default();
        let ids: Vec<&Uuid> = ids.iter().collect();
        for chunk in ids.chunks(CHUNK) {
            let mut q = Sql::new(format!("SELECT {} FROM process_orders WHERE order_id IN ", ORDER_COLUMNS.join(", ")));
            q.list(chunk.iter().map(|id| id.to_string())).push(" ORDER BY order_id");
            for_update(&mut q, dialect);
            for row in q.fetch_all(&mut *conn).await? {
                let (flow, partition) = flow_of(&row)?;
                orders.states.insert(flow.order_id, (flow, partition));
            }
        }
        Ok(orders)
    }

    /// The events to publish, or the reason the process refused the input (`Ok(Err)`).
    fn decide(
        &mut self,
        input: Input<'_>,
        order_id: Option<Uuid>,
        partition: i32,
        ctx: &Context,
    ) -> Result<Result<Vec<Event>, String>, Rejection> {
        let current = order_id.and_then(|id| self.states.get(&id)).map(|(flow, _)| flow);
        let decision = order::decide(current, input, ctx)?;
        if let Some(reason) = decision.refused {
            return Ok(Err(reason));
        }
        if let Some(flow) = decision.state {
            let partition = self.states.get(&flow.order_id).map_or(partition, |(_, p)| *p);
            self.dirty.insert(flow.order_id);
            self.states.insert(flow.order_id, (flow, partition));
        }
        Ok(Ok(decision.emit))
    }

    async fn write(&self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        let changed: Vec<&(OrderFlow, i32)> = self.dirty.iter().filter_map(|id| self.states.get(id)).collect();
        for chunk in changed.chunks(CHUNK) {
            let mut q = Sql::new(format!("INSERT INTO process_orders ({}) ", ORDER_COLUMNS.join(", ")));
            q.values(chunk, |v, (flow, partition)| {
                let lines = serde_json::to_string(&flow.lines).unwrap_or_else(|_| "[]".into());
                v.bind(flow.order_id.to_string())
                    .bind(flow.status.as_str().to_string())
                    .bind(flow.reason.clone())
                    .bind(flow.correlation_id.to_string())
                    .bind(lines)
                    .bind(flow.captured_minor)
                    .bind(flow.refund_requested_minor)
                    .bind(i64::from(*partition))
                    .bind(flow.payment_due_us)
                    .bind(flow.updated_at_us);
            });
            let updates: Vec<String> = ORDER_COLUMNS[1..].iter().map(|c| format!("{c} = excluded.{c}")).collect();
            q.push(&format!(" ON CONFLICT (order_id) DO UPDATE SET {}", updates.join(", ")));
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// The stock group's state for the SKUs and holds a batch touches.
#[derive(Default)]
struct Stocks {
    skus: HashMap<String, SkuStock>,
    holds: HashMap<(String, Uuid), Hold>,
    dirty_skus: BTreeSet<String>,
    dirty_holds: BTreeSet<(String, Uuid)>,
}

impl Stocks {
    async fn load(
        conn: &mut AnyConnection,
        dialect: Dialect,
        events: &[(&LogRecord, Event)],
    ) -> Result<Self, StoreError> {
        let skus: BTreeSet<&str> = events.iter().filter_map(|(_, e)| stock::sku_of(e)).collect();
        let orders: BTreeSet<String> =
            events.iter().filter_map(|(_, e)| stock::hold_id(e).map(|id| id.to_string())).collect();
        let mut stocks = Stocks::default();
        let skus: Vec<&str> = skus.into_iter().collect();
        for chunk in skus.chunks(CHUNK) {
            let mut q = Sql::new("SELECT sku, on_hand, reserved, shipped, version FROM stock_levels WHERE sku IN ");
            q.list(chunk.iter().map(|s| s.to_string())).push(" ORDER BY sku");
            for_update(&mut q, dialect);
            for row in q.fetch_all(&mut *conn).await? {
                let sku: String = row.try_get("sku")?;
                let stock = SkuStock {
                    sku: sku.clone(),
                    on_hand: row.try_get("on_hand")?,
                    reserved: row.try_get("reserved")?,
                    shipped: row.try_get("shipped")?,
                    version: row.try_get("version")?,
                };
                stocks.skus.insert(sku, stock);
            }
        }
        let orders: Vec<String> = orders.into_iter().collect();
        for chunk in orders.chunks(CHUNK) {
            let mut q = Sql::new("SELECT sku, order_id, quantity, status FROM stock_holds WHERE order_id IN ");
            q.list(chunk.iter().cloned());
            for row in q.fetch_all(&mut *conn).await? {
                let (sku, order_id): (String, String) = (row.try_get("sku")?, row.try_get("order_id")?);
                let order_id = Uuid::parse_str(&order_id).map_err(|e| corrupt("stock_holds", e))?;
                let status: String = row.try_get("status")?;
                let hold = Hold {
                    sku: sku.clone(),
                    order_id,
                    quantity: i32::try_from(row.try_get::<i64, _>("quantity")?)
                        .map_err(|e| corrupt("stock_holds", e))?,
                    status: HoldStatus::parse(&status)
                        .ok_or_else(|| corrupt("stock_holds", format!("status {status:?}")))?,
                };
                stocks.holds.insert((sku, order_id), hold);
            }
        }
        Ok(stocks)
    }

    fn decide(&mut self, event: &Event, ctx: &Context) -> Result<Result<Vec<Event>, String>, Rejection> {
        let sku = stock::sku_of(event).ok_or_else(|| Rejection::new("not a stock event"))?.to_string();
        let current = self.skus.get(&sku).cloned().unwrap_or_else(|| SkuStock::empty(&sku));
        let hold_key = stock::hold_id(event).map(|id| (sku.clone(), id));
        let hold = hold_key.as_ref().and_then(|k| self.holds.get(k));
        let decision = stock::decide(&current, hold, event, ctx)?;
        if let Some(next) = decision.sku {
            self.dirty_skus.insert(sku.clone());
            self.skus.insert(sku, next);
        }
        if let Some(hold) = decision.hold {
            let key = (hold.sku.clone(), hold.order_id);
            self.dirty_holds.insert(key.clone());
            self.holds.insert(key, hold);
        }
        Ok(Ok(decision.emit.into_iter().collect()))
    }

    async fn write(&self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        let skus: Vec<&SkuStock> = self.dirty_skus.iter().filter_map(|s| self.skus.get(s)).collect();
        for chunk in skus.chunks(CHUNK) {
            let mut q = Sql::new("INSERT INTO stock_levels (sku, on_hand, reserved, shipped, version) ");
            q.values(chunk, |v, s| {
                v.bind(s.sku.clone()).bind(s.on_hand).bind(s.reserved).bind(s.shipped).bind(s.version);
            });
            q.push(
                " ON CONFLICT (sku) DO UPDATE SET on_hand = excluded.on_hand, reserved = excluded.reserved,
                  shipped = excluded.shipped, version = excluded.version",
            );
            q.execute(&mut *conn).await?;
        }
        let holds: Vec<&Hold> = self.dirty_holds.iter().filter_map(|k| self.holds.get(k)).collect();
        for chunk in holds.chunks(CHUNK) {
            let mut q = Sql::new("INSERT INTO stock_holds (sku, order_id, quantity, status) ");
            q.values(chunk, |v, h| {
                v.bind(h.sku.clone())
                    .bind(h.order_id.to_string())
                    .bind(i64::from(h.quantity))
                    .bind(h.status.as_str().to_string());
            });
            q.push(" ON CONFLICT (sku, order_id) DO UPDATE SET quantity = excluded.quantity, status = excluded.status");
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// Decided events, and the trace context of the decision each came from, by position
/// (shorter: none for the rest).
#[derive(Clone, Copy)]
struct Emitted<'a> {
    events: &'a [Event],
    traces: &'a [Option<String>],
}

impl<'a> Emitted<'a> {
    fn untraced(events: &'a [Event]) -> Self {
        Emitted { events, traces: &[] }
    }
}

/// Puts decided events into the outbox, in decision order (`seq` keeps it).
async fn enqueue(
    conn: &mut AnyConnection,
    here: Option<&str>,
    codec: &Codec,
    settings: &ProcessSettings,
    principal: &str,
    emitted: Emitted<'_>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let Emitted { events, traces } = emitted;
    let mut rows = Vec::with_capacity(events.len());
    // Decisions about the orders of a region handed over (one this region took over, or
    // this region's own after it took them back) go out under the handover's epoch.
    let here = here.and_then(|r| schemas::Region::parse(r).ok());
    let homes = |e: &Event| e.order_id().and_then(|id| schemas::Region::home_of(&id));
    let owners = match &here {
        Some(_) if events.iter().any(|e| homes(e).is_some()) => Some(super::handovers::owners(&mut *conn).await?),
        _ => None,
    };
    for (i, event) in events.iter().enumerate() {
        let payload = codec.encode(event).map_err(|e| StoreError::Invalid(format!("encoding a decision: {e}")))?;
        let epoch = match (&here, &owners, homes(event)) {
            (Some(here), Some(owners), Some(home)) => owners.writes_as(here, &home).unwrap_or(1),
            _ => 1,
        };
        let trace = traces.get(i).cloned().flatten();
        rows.push((settings.destination(event), event.key(), payload, epoch, trace));
    }
    for chunk in rows.chunks(CHUNK) {
        let mut q = Sql::new(
            "INSERT INTO outbox (topic, record_key, payload, published_by, created_at_ms, epoch, trace_parent) ",
        );
        q.values(chunk, |v, (topic, key, payload, epoch, trace)| {
            v.bind(topic.clone())
                .bind(key.clone())
                .bind(payload.clone())
                .bind(principal.to_string())
                .bind(now_ms)
                .bind(i64::from(*epoch))
                .bind(trace.clone());
        });
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

impl Store {
    /// Applies a batch of a process group in one transaction: state, decided events (into
    /// the outbox), dead letters and offsets together.
    #[tracing::instrument(skip_all, fields(group = batch.group, records = batch.records.len(), process = %kind))]
    pub(super) async fn apply_process_batch(
        &self,
        kind: ProcessKind,
        batch: &Batch<'_>,
        codec: &Codec,
        settings: &ProcessSettings,
    ) -> Result<BatchOutcome, StoreError> {
        if batch.records.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let mut open = match self
            .open_batch(
                batch,
                super::batch::DecodedRecords::of(codec, batch.records, |k| kind.wants(k), batch.role),
                |_| true,
            )
            .await?
        {
            Ok(open) => open,
            Err(done) => return Ok(done),
        };
        let Opened { tx, stored, events, dead, refused, parked, outcome, order_ids, .. } = &mut open;
        let conn: &mut AnyConnection = tx;
        if crate::registry::GroupKind::from(kind).shares_state_across_topics() {
            let partitions = stored.keys().copied();
            match kind {
                // Its batches read and write only the rows of their orders.
                ProcessKind::OrderProcess => {
                    super::batch::lock_orders_of_batch(conn, batch.group, partitions, order_ids).await?
                }
                // A SKU's row is touched by any order holding it: whole partitions.
                ProcessKind::Stock => super::batch::lock_partition_numbers(conn, batch.group, partitions).await?,
            }
        }
        let events = std::mem::take(events);

        let ctx = settings.context();
        let mut emitted: Vec<Event> = Vec::new();
        // Parallel to `emitted`: the trace context of the record each was decided on.
        let mut traces: Vec<Option<String>> = Vec::new();
        let mut refused: Vec<NewDeadLetter> = std::mem::take(refused);
        let mut orders = Orders::default();
        let mut stocks = Stocks::default();
        match kind {
            ProcessKind::OrderProcess => orders = Orders::load(conn, self.dialect, order_ids).await?,
            ProcessKind::Stock => stocks = Stocks::load(conn, self.dialect, &events).await?,
        }
        for (record, event) in &events {
            let order_id = event.order_id();
            if super::batch::held_back(parked, dead, record, order_id) {
                continue;
            }
            let decided = match kind {
                ProcessKind::OrderProcess => orders.decide(Input::Event(event), order_id, record.partition, &ctx),
                ProcessKind::Stock => stocks.decide(event, &ctx),
            };
            match decided {
                Ok(Ok(events)) => {
                    outcome.applied += 1;
                    traces.extend(std::iter::repeat_n(record.trace_parent.clone(), events.len()));
                    emitted.extend(events);
                }
                Ok(Err(reason)) => refused.push(NewDeadLetter { record, order_id, reason }),
                Err(rejection) => refused.push(NewDeadLetter::refused(record, order_id, rejection)),
            }
        }

        let (group, topic, now_ms) = (batch.group, batch.topic, open.now_ms);
        let conn: &mut AnyConnection = &mut open.tx;
        orders.write(conn).await?;
        stocks.write(conn).await?;
        enqueue(
            conn,
            self.region.as_deref(),
            codec,
            settings,
            kind.principal(),
            Emitted { events: &emitted, traces: &traces },
            now_ms,
        )
        .await?;
        open.outcome.dead_lettered = open.dead.len() + refused.len();
        dead_letters::insert(conn, group, topic, &open.dead, now_ms).await?;
        dead_letters::insert_refused(conn, group, topic, &refused, now_ms).await?;
        super::batch::commit_batch(open.tx, batch, open.stored, open.fresh, now_ms, open.outcome).await
    }

    /// Fires the payment timers that are due on `partitions` of the order process's
    /// `group`, in one transaction holding those partitions' offset rows: a batch of the
    /// same partitions waits for it (or it for the batch), so a timer and an event of one
    /// order are never decided at once, and a timer fires once (its decision clears it in
    /// the same commit). Returns how many fired.
    #[tracing::instrument(skip_all, fields(group, partitions = partitions.len()))]
    pub(super) async fn fire_due_timers(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
        codec: &Codec,
        settings: &ProcessSettings,
    ) -> Result<usize, StoreError> {
        if partitions.is_empty() {
            return Ok(0);
        }
        let ctx = settings.context();
        let now_us = ctx.now.timestamp_micros();
        // Cheap look first: most calls find nothing due and take no lock.
        let mut probe = Sql::new("SELECT COUNT(*) AS n FROM process_orders WHERE due_at_us <= ");
        probe.bind(now_us).push(" AND partition_id IN ").list(partitions.iter().map(|p| i64::from(*p)));
        let due: i64 = probe.fetch_all(&self.pool).await?.first().map(|r| r.try_get("n")).transpose()?.unwrap_or(0);
        if due == 0 {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let conn: &mut AnyConnection = &mut tx;
        let owned: Vec<i32> = offsets::read(conn, self.dialect, group, topic, Some(partitions), Lock::ForUpdate)
            .await?
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        if owned.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        super::batch::lock_partition_numbers(conn, group, owned.iter().copied()).await?;
        let mut q = Sql::new(format!("SELECT {} FROM process_orders WHERE due_at_us <= ", ORDER_COLUMNS.join(", ")));
        q.bind(now_us).push(" AND partition_id IN ").list(owned.iter().map(|p| i64::from(*p)));
        q.push(" ORDER BY order_id LIMIT 500");
        for_update(&mut q, self.dialect);
        let mut orders = Orders::default();
        for row in q.fetch_all(&mut *conn).await? {
            let (flow, partition) = flow_of(&row)?;
            orders.states.insert(flow.order_id, (flow, partition));
        }
        let ids: Vec<Uuid> = orders.states.keys().copied().collect();
        let parked = dead_letters::parked_orders(conn, group, &ids).await?;
        let mut emitted = Vec::new();
        let mut fired = 0;
        for id in ids.iter().filter(|id| !parked.contains(id)) {
            let partition = orders.states[id].1;
            match orders.decide(Input::PaymentDue, Some(*id), partition, &ctx) {
                Ok(Ok(events)) => {
                    fired += usize::from(!events.is_empty());
                    emitted.extend(events);
                }
                Ok(Err(reason)) => {
                    tracing::warn!(order = %id, %reason, "A payment timer was refused by the order's state. Nothing is emitted for it.")
                }
                Err(rejection) => {
                    tracing::warn!(order = %id, reason = %rejection.0, "A payment timer could not be decided. Nothing is emitted for it.")
                }
            }
        }
        orders.write(conn).await?;
        enqueue(
            conn,
            self.region.as_deref(),
            codec,
            settings,
            ORDER_PROCESS_PRINCIPAL,
            Emitted::untraced(&emitted),
            schemas::clock::now_ms(),
        )
        .await?;
        hit(FaultPoint::AfterProjectionWrite);
        tx.commit().await?;
        Ok(fired)
    }
}

fn status_row(r: &AnyRow) -> Result<OrderStatusRow, StoreError> {
    let id: String = r.try_get("order_id")?;
    let status: String = r.try_get("status")?;
    let updated_us: i64 = r.try_get("updated_at_us")?;
    Ok(OrderStatusRow {
        order_id: Uuid::parse_str(&id).map_err(|e| corrupt("order_status", e))?,
        status: OrderStatus::parse(&status).ok_or_else(|| corrupt("order_status", format!("status {status:?}")))?,
        reason: r.try_get("reason")?,
        updated_at: super::rfc3339(updated_us),
    })
}

/// The advisory lock a relay holds while it publishes the outbox (PostgreSQL).
pub const RELAY_LOCK: i64 = 7_142_002;

/// The right to publish the outbox: one relay per database at a time, so the outbox is
/// published in the order it was written. On PostgreSQL a session advisory lock on a
/// connection of its own, released when the connection ends (a killed relay's included);
/// SQLite databases are embedded, one process, one relay.
pub struct RelayLease {
    conn: Option<AnyConnection>,
}

impl RelayLease {
    /// Fails if the lease's connection is gone (and with it the lock, which another relay
    /// may hold by now).
    pub async fn check(&mut self) -> Result<(), StoreError> {
        if let Some(conn) = &mut self.conn {
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
        }
        Ok(())
    }
}

impl Outbox {
    /// The oldest `limit` events of the outbox, in the order they were decided.
    pub async fn outbox_batch(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, topic, record_key, payload, published_by, epoch, trace_parent FROM outbox ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxRow {
                    seq: r.try_get("seq")?,
                    topic: r.try_get("topic")?,
                    key: r.try_get("record_key")?,
                    payload: r.try_get("payload")?,
                    published_by: r.try_get("published_by")?,
                    epoch: u32::try_from(r.try_get::<i64, _>("epoch")?).unwrap_or(1),
                    trace_parent: r.try_get("trace_parent")?,
                })
            })
            .collect()
    }

    /// Forgets these outbox events: the broker acknowledged them. By their `seq`, never
    /// "up to" one: sequence numbers are taken at insert and committed in any order, so a
    /// row below the last one published may have committed after the relay read.
    pub async fn delete_outbox(&self, published: &[i64]) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for chunk in published.chunks(CHUNK) {
            let mut q = Sql::new("DELETE FROM outbox WHERE seq IN ");
            q.list(chunk.iter().copied());
            deleted += q.execute(&mut *self.store.pool.acquire().await?).await?;
        }
        Ok(deleted)
    }

    /// Takes the relay lease if no other relay holds it.
    pub async fn try_relay_lease(&self) -> Result<Option<RelayLease>, StoreError> {
        if self.store.dialect == Dialect::Sqlite {
            return Ok(Some(RelayLease { conn: None }));
        }
        // Detached: the lock lives as long as this connection, which never goes back to
        // the pool still holding it.
        let mut conn = self.store.pool.acquire().await?.detach();
        let held: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(RELAY_LOCK).fetch_one(&mut conn).await?;
        Ok(held.then_some(RelayLease { conn: Some(conn) }))
    }
}

impl Reads {
    /// Events decided and not yet published.
    pub async fn outbox_len(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(&self.store.pool).await?)
    }

    /// Orders the order process has yet to decide or that wait for their payment (pending
    /// or confirmed): each will change status on its own, at the latest when its payment
    /// timer fires.
    pub async fn open_orders(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM order_status WHERE status IN ('pending', 'confirmed')")
            .fetch_one(&self.store.pool)
            .await?)
    }

    /// One order's status, if the order process has seen it.
    pub async fn order_status(&self, order_id: Uuid) -> Result<Option<OrderStatusRow>, StoreError> {
        let row = sqlx::query("SELECT order_id, status, reason, updated_at_us FROM order_status WHERE order_id = $1")
            .bind(order_id.to_string())
            .fetch_optional(&self.store.pool)
            .await?;
        row.map(|r| status_row(&r)).transpose()
    }

    /// How many orders are in each status of the order process.
    pub async fn decision_counts(&self) -> Result<Vec<DecisionCount>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS orders FROM order_status GROUP BY status ORDER BY status")
            .fetch_all(&self.store.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let raw: String = r.try_get("status")?;
                let status =
                    OrderStatus::parse(&raw).ok_or_else(|| corrupt("order_status", format!("status {raw:?}")))?;
                Ok(DecisionCount { status, orders: r.try_get("orders")? })
            })
            .collect()
    }
}

/// A process's state recovered from the log ([`crate::process::recover`]), to install.
pub enum Recovered {
    Orders(crate::process::recover::OrdersState),
    Stock(crate::process::recover::StockState),
}

impl Recovered {
    fn kind(&self) -> ProcessKind {
        match self {
            Recovered::Orders(_) => ProcessKind::OrderProcess,
            Recovered::Stock(_) => ProcessKind::Stock,
        }
    }

    /// Decisions the replay took that were not on the log (the lost outbox's tail).
    pub fn missing(&self) -> &[Event] {
        match self {
            Recovered::Orders(s) => &s.missing,
            Recovered::Stock(s) => &s.missing,
        }
    }
}

/// How many rows a restore wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    pub orders: usize,
    pub skus: usize,
    pub holds: usize,
    /// Decisions put into the outbox because the log did not have them.
    pub republished: usize,
}

impl Operations {
    /// The event of a record a process group would decide on, as its live batch decodes
    /// it (`None` for a kind it does not read, an untrusted or undecodable record, or an
    /// order homed in another region): a rebuild from the log reads exactly what the live
    /// group read.
    pub fn decodable_input(
        &self,
        kind: ProcessKind,
        codec: &Codec,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Option<Event> {
        let role = schemas::TopicRole::by_name(topic);
        match super::fold::decode_with(codec, key, payload, |k| kind.wants(k), role) {
            super::fold::Decoded::Event(event) => {
                // A copy (`eu.orders`) is the log of the region it copies.
                let copied =
                    topic.split_once('.').map(|(source, _)| source).filter(|s| schemas::Region::parse(s).is_ok());
                let region = copied.or(self.store.region.as_deref()).unwrap_or_default();
                super::batch::homed_elsewhere(&event, region).is_none().then_some(event)
            }
            _ => None,
        }
    }

    /// Installs a process's recovered state in one transaction: its tables' rows replace
    /// the old ones, its group's offsets move to `ends` (where the recovery stopped
    /// reading), the inputs it applied are remembered as applied, and decisions the log
    /// did not have go into the outbox. Run only while the group has no members.
    #[tracing::instrument(skip_all, fields(process = %recovered.kind()))]
    pub async fn restore_process(
        &self,
        recovered: &Recovered,
        ends: &std::collections::BTreeMap<(String, i32), i64>,
        codec: &Codec,
        settings: &ProcessSettings,
    ) -> Result<Restored, StoreError> {
        let kind = recovered.kind();
        let group = self.store.group(kind);
        let now_ms = schemas::clock::now_ms();
        let mut tx = self.store.begin_write().await?;
        let conn: &mut AnyConnection = &mut tx;
        let mut restored = Restored { orders: 0, skus: 0, holds: 0, republished: recovered.missing().len() };
        let applied = match recovered {
            Recovered::Orders(state) => {
                sqlx::query("DELETE FROM process_orders").execute(&mut *conn).await?;
                let orders = Orders {
                    states: state.flows.iter().map(|(id, (flow, p))| (*id, (flow.clone(), *p))).collect(),
                    dirty: state.flows.keys().copied().collect(),
                };
                orders.write(conn).await?;
                restored.orders = state.flows.len();
                &state.applied
            }
            Recovered::Stock(state) => {
                sqlx::query("DELETE FROM stock_levels").execute(&mut *conn).await?;
                sqlx::query("DELETE FROM stock_holds").execute(&mut *conn).await?;
                let stocks = Stocks {
                    skus: state.skus.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    holds: state.holds.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    dirty_skus: state.skus.keys().cloned().collect(),
                    dirty_holds: state.holds.keys().cloned().collect(),
                };
                stocks.write(conn).await?;
                (restored.skus, restored.holds) = (state.skus.len(), state.holds.len());
                &state.applied
            }
        };
        let read: BTreeSet<&String> = ends.keys().map(|(topic, _)| topic).collect();
        for topic in read {
            sqlx::query("DELETE FROM consumer_offsets WHERE group_id = $1 AND topic = $2")
                .bind(&group)
                .bind(topic)
                .execute(&mut *conn)
                .await?;
        }
        for ((topic, partition), end) in ends {
            sqlx::query(
                "INSERT INTO consumer_offsets (group_id, topic, partition_id, next_offset, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&group)
            .bind(topic)
            .bind(i64::from(*partition))
            .bind(*end)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
        }
        sqlx::query("DELETE FROM processed_events WHERE group_id = $1").bind(&group).execute(&mut *conn).await?;
        let ids: Vec<String> = applied.iter().map(Uuid::to_string).collect();
        for chunk in ids.chunks(10_000) {
            super::fold::claim_event_ids(conn, &group, chunk).await?;
        }
        enqueue(
            conn,
            self.store.region.as_deref(),
            codec,
            settings,
            kind.principal(),
            Emitted::untraced(recovered.missing()),
            now_ms,
        )
        .await?;
        tx.commit().await?;
        Ok(restored)
    }
}

/// What a takeover installed in the order process of the region that took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Adopted {
    pub orders: usize,
    /// Decisions and stock requests put into the outbox under the new epoch.
    pub enqueued: usize,
}

impl Operations {
    /// A takeover, in one transaction: the lost region's orders, as recovered from this
    /// region's copy of its log up to the cut, join this region's order process (its own
    /// orders untouched), the inputs they applied are remembered as applied, `enqueue`
    /// (decisions the lost region had not published, stock requests its stock group never
    /// decided) goes into the outbox, and the handover is recorded. From the commit on,
    /// this region writes the lost region's orders under the handover's epoch. A failback
    /// takes the same path (the orders as their last owner had them); `dropped` are orders
    /// this region had that are not part of the handed stream (its late tail's), and the
    /// region's drain ends.
    #[tracing::instrument(skip_all, fields(region = %handover.region, epoch = handover.epoch))]
    pub async fn take_over(
        &self,
        handover: &schemas::Handover,
        adopted: &crate::process::recover::OrdersState,
        enqueue_now: &[Event],
        codec: &Codec,
        settings: &ProcessSettings,
        dropped: &[Uuid],
    ) -> Result<Adopted, StoreError> {
        let group = self.store.group(ProcessKind::OrderProcess);
        let now_ms = schemas::clock::now_ms();
        let mut tx = self.store.begin_write().await?;
        let conn: &mut AnyConnection = &mut tx;
        let orders = Orders {
            states: adopted.flows.iter().map(|(id, (flow, p))| (*id, (flow.clone(), *p))).collect(),
            dirty: adopted.flows.keys().copied().collect(),
        };
        orders.write(conn).await?;
        forget_orders(conn, dropped).await?;
        super::handovers::end_drain(&mut *conn, &handover.region).await?;
        let ids: Vec<String> = adopted.applied.iter().map(Uuid::to_string).collect();
        for chunk in ids.chunks(10_000) {
            super::fold::claim_event_ids(conn, &group, chunk).await?;
        }
        super::handovers::insert_handover(&mut *conn, handover).await?;
        // After the handover row, so the outbox rows get its epoch.
        enqueue(
            conn,
            self.store.region.as_deref(),
            codec,
            settings,
            ORDER_PROCESS_PRINCIPAL,
            Emitted::untraced(enqueue_now),
            now_ms,
        )
        .await?;
        tx.commit().await?;
        Ok(Adopted { orders: adopted.flows.len(), enqueued: enqueue_now.len() })
    }

    /// The order process's flows of the orders homed in `region` (a failback hands them
    /// to the region taking its orders back).
    pub async fn orders_of_region(
        &self,
        region: &schemas::Region,
    ) -> Result<crate::process::recover::OrdersState, StoreError> {
        let mut conn = self.store.pool.acquire().await?;
        let q = Sql::new(format!("SELECT {} FROM process_orders ORDER BY order_id", ORDER_COLUMNS.join(", ")));
        let mut state = crate::process::recover::OrdersState::default();
        for row in q.fetch_all(&mut *conn).await? {
            let (flow, partition) = flow_of(&row)?;
            if schemas::Region::home_of(&flow.order_id).as_ref() == Some(region) {
                state.flows.insert(flow.order_id, (flow, partition));
            }
        }
        Ok(state)
    }

    /// This region stops writing `handover.region`'s orders: their flows leave the order
    /// process (no timer of theirs fires here again), the handover is recorded and the
    /// drain ends, in one transaction.
    #[tracing::instrument(skip_all, fields(region = %handover.region, owner = %handover.owner, epoch = handover.epoch))]
    pub async fn release_region(&self, handover: &schemas::Handover, orders: &[Uuid]) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        let conn: &mut AnyConnection = &mut tx;
        forget_orders(conn, orders).await?;
        super::handovers::insert_handover(&mut *conn, handover).await?;
        super::handovers::end_drain(&mut *conn, &handover.region).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Removes the order process's flows of `orders`.
async fn forget_orders(conn: &mut AnyConnection, orders: &[Uuid]) -> Result<(), StoreError> {
    for chunk in orders.chunks(CHUNK) {
        let mut q = Sql::new("DELETE FROM process_orders WHERE order_id IN ");
        q.list(chunk.iter().map(Uuid::to_string));
        q.execute(&mut *conn).await?;
    }
    Ok(())
}
