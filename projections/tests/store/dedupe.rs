//! A copy of an event (a retried publish that landed twice) is applied once. Order rows
//! keep the ids of the events applied to them, so the copy is recognised on the row the
//! batch loads anyway and `processed_events` gains no row; a row written by an earlier
//! release (no ids on it) goes on deduplicating through `processed_events`.

use std::collections::BTreeMap;

use projections::store::{Batch, BatchOutcome, LogRecord, Store};
use projections::ProjectionKind;
use schemas::samples::{lifecycle, readdressed, sample};
use schemas::{Codec, Event, EventKind};
use uuid::Uuid;

async fn count(store: &Store, sql: &str) -> i64 {
    use sqlx::Row;
    let row = sqlx::query(sql).fetch_one(store.pool()).await.expect(sql);
    row.try_get("n").expect("n")
}

pub(crate) fn record(codec: &Codec, event: &Event, offset: i64) -> LogRecord {
    LogRecord {
        partition: 0,
        offset,
        key: Some(event.key().into_bytes()),
        payload: Some(codec.encode(event).expect("encode")),
        timestamp_ms: None,
        published_by: None,
        epoch: 1,
        trace_parent: None,
    }
}

/// Applies `events` as the records from `from` on, in one batch of the payment group.
pub(crate) async fn apply(store: &Store, codec: &Codec, events: &[&Event], from: i64) -> BatchOutcome {
    let records: Vec<LogRecord> =
        events.iter().zip(from..).map(|(event, offset)| record(codec, event, offset)).collect();
    let read_from = BTreeMap::from([(0, from)]);
    let batch =
        Batch { group: "g", topic: "t", role: schemas::TopicRole::Orders, records: &records, read_from: &read_from };
    store.batches().apply(ProjectionKind::Payment, &batch, codec).await.expect("batch")
}

async fn captured(store: &Store, order: Uuid) -> i64 {
    let view = store.reads().order_view(&order.to_string()).await.expect("view").expect("the order");
    view.payment.expect("payment").captured_minor
}

async fn copies_in_a_later_batch_are_applied_once_without_an_id_row(url: &str) {
    let store = Store::connect(url).await.expect("store");
    let codec = Codec::builtin();
    let order = Uuid::new_v4();
    let events = lifecycle(order);
    let (placed, authorized, capture) = (&events[0], &events[1], &events[2]);
    let first = apply(&store, &codec, &[placed, authorized, capture], 0).await;
    assert_eq!((first.applied, first.duplicates), (3, 0));
    let amount = captured(&store, order).await;
    assert!(amount > 0);

    // The capture published again, twice in one batch and beside a new event of the order.
    let cancelled = readdressed(sample(EventKind::OrderCancelled), order);
    let again = apply(&store, &codec, &[capture, capture, placed, &cancelled], 3).await;
    assert_eq!((again.applied, again.duplicates), (1, 3), "only the cancellation is new");
    assert_eq!(captured(&store, order).await, amount, "the capture counted once");
    assert_eq!(count(&store, "SELECT COUNT(*) AS n FROM processed_events").await, 0, "no id rows for order events");
}

on_each_database!(a_copy_of_an_applied_event_in_a_later_batch_is_applied_once_and_inserts_no_id_row => copies_in_a_later_batch_are_applied_once_without_an_id_row);

/// A table as an earlier release left it: no ids on its rows, its events' ids in
/// `processed_events`.
async fn rows_of_an_earlier_release_deduplicate_through_processed_events(url: &str) {
    let store = Store::connect(url).await.expect("store");
    let codec = Codec::builtin();
    let order = Uuid::new_v4();
    let events = lifecycle(order);
    let (placed, authorized, capture) = (&events[0], &events[1], &events[2]);
    apply(&store, &codec, &[placed, authorized], 0).await;
    for statement in [
        // The earlier release's table had no such column; starting again adds it, empty.
        "ALTER TABLE payment_orders DROP COLUMN event_ids".to_string(),
        format!(
            "INSERT INTO processed_events (group_id, event_id, applied_at_ms) VALUES ('g', '{}', 1), ('g', '{}', 1)",
            placed.envelope().event_id,
            authorized.envelope().event_id
        ),
    ] {
        sqlx::query(&statement).execute(store.pool()).await.expect(&statement);
    }
    drop(store);
    let store = Store::connect(url).await.expect("a start adds the column");

    let again = apply(&store, &codec, &[authorized, capture], 2).await;
    assert_eq!((again.applied, again.duplicates), (1, 1), "the old copy is known from processed_events");
    let copy = apply(&store, &codec, &[capture], 4).await;
    assert_eq!((copy.applied, copy.duplicates), (0, 1), "and so is the new event's copy");
    let amount = captured(&store, order).await;
    assert!(amount > 0);
    let ids_of_order = "SELECT COUNT(*) AS n FROM processed_events WHERE group_id = 'g'";
    assert_eq!(count(&store, ids_of_order).await, 3, "the old row's new event claimed its id there");
    let legacy = "SELECT COUNT(*) AS n FROM payment_orders WHERE event_ids IS NULL";
    assert_eq!(count(&store, legacy).await, 1, "the row stays an earlier release's");
}

on_each_database!(a_row_of_an_earlier_release_goes_on_deduplicating_through_processed_events => rows_of_an_earlier_release_deduplicate_through_processed_events);
