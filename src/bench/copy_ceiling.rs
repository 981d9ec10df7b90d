//! P1's physical ceiling: what PostgreSQL's bulk path takes for the same batches the
//! projector applies. Per batch, in one transaction, as a hand-written bulk loader would:
//! the batch's event ids by binary `COPY` into `processed_events`, the payment rows the
//! batch leaves (folded in memory beforehand, not timed) by binary `COPY` into a staging
//! table and merged into `payment_orders` with one statement, one offset update, commit.
//! The same durability as the projector (synchronous commit as the server has it).
use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use projections::model::history::{History, OrderHistory};
use projections::model::payment::{Payment, PaymentOrder};
use projections::model::{LogPosition, Projection};
use projections::store::{Binder, Columns, LogRecord, StoredState};
use schemas::{Codec, Event};
use sqlx::Connection;
use uuid::Uuid;

/// One batch as the bulk loader writes it.
struct BulkBatch {
    event_ids: Vec<String>,
    rows: Vec<PaymentOrder>,
    /// (partition, next offset) after the batch.
    offsets: Vec<(i32, i64)>,
}

/// Folds `records` in batches of `batch` through the payment projection in memory: each
/// batch's event ids and the rows it changes, as they stand after it.
fn fold_batches(records: &[LogRecord], batch: usize) -> Vec<BulkBatch> {
    let codec = Codec::builtin();
    let mut states: HashMap<Uuid, PaymentOrder> = HashMap::new();
    records
        .chunks(batch)
        .map(|chunk| {
            let mut event_ids = Vec::with_capacity(chunk.len());
            let mut touched: Vec<Uuid> = Vec::new();
            let mut offsets: HashMap<i32, i64> = HashMap::new();
            for r in chunk {
                offsets.insert(r.partition, r.offset + 1);
                let Some(event) = r.payload.as_deref().and_then(|p| codec.decode(p).ok()) else { continue };
                if !Payment::wants(event.kind()) {
                    continue;
                }
                let Some(order) = event.order_id() else { continue };
                if let Ok(effect) = Payment::apply(states.get(&order), &event) {
                    if let Some(state) = effect.order {
                        states.insert(order, state);
                        touched.push(order);
                    }
                }
                event_ids.push(event_id(&event));
            }
            touched.sort();
            touched.dedup();
            let rows = touched.iter().filter_map(|id| states.get(id).cloned()).collect();
            BulkBatch { event_ids, rows, offsets: offsets.into_iter().collect() }
        })
        .collect()
}

fn event_id(event: &Event) -> String {
    event.envelope().event_id.to_string()
}

async fn copy_in(conn: &mut sqlx::PgConnection, statement: &str, data: Vec<u8>) -> anyhow::Result<()> {
    let mut copy = conn.copy_in_raw(statement).await?;
    copy.send(data).await?;
    copy.finish().await?;
    Ok(())
}

/// The ceiling's own offset rows, one per partition of `records`, at 0.
async fn offset_rows(
    conn: &mut sqlx::PgConnection,
    group: &str,
    topic: &str,
    records: &[LogRecord],
) -> anyhow::Result<()> {
    let mut setup = conn.begin().await?;
    for p in records.iter().map(|r| r.partition).collect::<std::collections::BTreeSet<_>>() {
        sqlx::query(
            "INSERT INTO consumer_offsets (group_id, topic, partition_id, next_offset, updated_at_ms) VALUES ($1, $2, $3, 0, 0)",
        )
        .bind(group)
        .bind(topic)
        .bind(i64::from(p))
        .execute(&mut *setup)
        .await?;
    }
    setup.commit().await?;
    Ok(())
}

/// One update of the ceiling's offset rows, as the store makes per batch.
async fn advance(
    tx: &mut sqlx::PgConnection,
    group: &str,
    topic: &str,
    offsets: &[(i32, i64)],
    now_ms: i64,
) -> anyhow::Result<()> {
    let partitions: Vec<i64> = offsets.iter().map(|(p, _)| i64::from(*p)).collect();
    let nexts: Vec<i64> = offsets.iter().map(|(_, o)| *o).collect();
    sqlx::query(
        "UPDATE consumer_offsets SET next_offset = v.next, updated_at_ms = $1 \
         FROM unnest($2::bigint[], $3::bigint[]) AS v(p, next) \
         WHERE group_id = $4 AND topic = $5 AND partition_id = v.p",
    )
    .bind(now_ms)
    .bind(&partitions)
    .bind(&nexts)
    .bind(group)
    .bind(topic)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Events per second through the bulk path, over all batches, into the (migrated, empty)
/// database at `database_url`.
pub(super) async fn copy_ceiling(database_url: &str, records: &[LogRecord], batch: usize) -> anyhow::Result<f64> {
    let batches = fold_batches(records, batch);
    let mut conn = sqlx::PgConnection::connect(database_url).await.context("connecting for the COPY ceiling")?;
    let group = "bench-copy-ceiling";
    let topic = "bench";
    offset_rows(&mut conn, group, topic, records).await?;
    let started = Instant::now();
    for b in &batches {
        let mut tx = conn.begin().await?;
        let now_ms = schemas::clock::now_ms();
        let mut ids = Columns::new();
        for id in &b.event_ids {
            ids.row().cell(group.to_string()).cell(id.clone()).cell(now_ms);
        }
        copy_in(
            &mut tx,
            "COPY processed_events (group_id, event_id, applied_at_ms) FROM STDIN (FORMAT binary)",
            ids.copy_binary(),
        )
        .await?;
        sqlx::query("CREATE TEMPORARY TABLE IF NOT EXISTS payment_staging (LIKE payment_orders) ON COMMIT DELETE ROWS")
            .execute(&mut *tx)
            .await?;
        // The rows as the store binds them (`StoredState::push_binds`), without their ids.
        let mut rows = Columns::new();
        for r in &b.rows {
            r.push_binds(0, rows.row());
        }
        copy_in(
            &mut tx,
            &format!("COPY payment_staging ({}) FROM STDIN (FORMAT binary)", PaymentOrder::COLUMNS.join(", ")),
            rows.copy_binary(),
        )
        .await?;
        sqlx::query(
            "INSERT INTO payment_orders SELECT * FROM payment_staging ON CONFLICT (order_id) DO UPDATE SET \
             currency = excluded.currency, order_total_minor = excluded.order_total_minor, \
             authorized_minor = excluded.authorized_minor, captured_minor = excluded.captured_minor, \
             refunded_minor = excluded.refunded_minor, status = excluded.status, \
             placed_at_us = excluded.placed_at_us, captured_at_us = excluded.captured_at_us",
        )
        .execute(&mut *tx)
        .await?;
        advance(&mut tx, group, topic, &b.offsets, now_ms).await?;
        tx.commit().await?;
    }
    Ok(records.len() as f64 / started.elapsed().as_secs_f64().max(1e-6))
}

/// History's ceiling: per batch, in one transaction, the batch's history rows (built
/// beforehand, not timed) by binary `COPY` straight into `history_entries`, whose key (order,
/// event id) is the duplicate guard, one offset update, commit: what appending a row per
/// event costs PostgreSQL at the least.
pub(super) async fn history_copy_ceiling(
    database_url: &str,
    records: &[LogRecord],
    batch: usize,
) -> anyhow::Result<f64> {
    let codec = Codec::builtin();
    // Per batch: its rows in binary `COPY` form, and (partition, next offset) after it.
    type RowsAndOffsets = (Vec<u8>, Vec<(i32, i64)>);
    let batches: Vec<RowsAndOffsets> = records
        .chunks(batch)
        .map(|chunk| {
            let mut rows = Columns::new();
            let mut offsets: HashMap<i32, i64> = HashMap::new();
            for r in chunk {
                offsets.insert(r.partition, r.offset + 1);
                let Some(event) = r.payload.as_deref().and_then(|p| codec.decode(p).ok()) else { continue };
                if !History::wants(event.kind()) {
                    continue;
                }
                let at = LogPosition { partition: r.partition, offset: r.offset };
                if let Ok(Some(entry)) = History::apply_at(None, &event, at, r.published_by.as_deref()).map(|e| e.order)
                {
                    entry.push_binds(0, rows.row());
                }
            }
            (rows.copy_binary(), offsets.into_iter().collect())
        })
        .collect();
    let mut conn = sqlx::PgConnection::connect(database_url).await.context("connecting for the COPY ceiling")?;
    let (group, topic) = ("bench-history-ceiling", "bench");
    offset_rows(&mut conn, group, topic, records).await?;
    let statement = format!("COPY history_entries ({}) FROM STDIN (FORMAT binary)", OrderHistory::COLUMNS.join(", "));
    let started = Instant::now();
    for (rows, offsets) in batches {
        let mut tx = conn.begin().await?;
        copy_in(&mut tx, &statement, rows).await?;
        advance(&mut tx, group, topic, &offsets, schemas::clock::now_ms()).await?;
        tx.commit().await?;
    }
    Ok(records.len() as f64 / started.elapsed().as_secs_f64().max(1e-6))
}
