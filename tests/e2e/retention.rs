//! The store forgets event ids past the dedupe window and dead letters resolved long ago,
//! in batches; inside the window a copy of an event is still dropped, and parked dead
//! letters are never forgotten. (Ids go to `processed_events` for events no order row
//! keeps them for: here the inventory's stock decisions about no order, an adjustment's;
//! see `dedupe.rs` for the order rows that keep theirs, and the history, whose key is its
//! guard.)
use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use projections::store::{Batch, DeadLetterSelection, LogRecord, Retention, Store};
use projections::ProjectionKind;
use schemas::samples::sample;
use schemas::{Codec, Event, EventKind, TopicRole};

async fn count(store: &Store, table: &str) -> i64 {
    use sqlx::Row;
    let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}")).fetch_one(store.pool()).await.expect("count");
    row.try_get("n").expect("n")
}

/// Applies `records` (from offset `from`) to the inventory group `g`, as read from the
/// topic of `role`.
async fn apply(
    store: &Store,
    codec: &Codec,
    records: &[LogRecord],
    from: i64,
    role: TopicRole,
) -> projections::store::BatchOutcome {
    let read_from = BTreeMap::from([(0, from)]);
    let topic = role.name("t");
    let batch = Batch { group: "g", topic: &topic, role, records, read_from: &read_from };
    store.batches().apply(ProjectionKind::Inventory, &batch, codec).await.expect("batch")
}

async fn pruning_keeps_the_tables_bounded(database_url: &str) {
    let store = Store::connect(database_url).await.expect("store");
    let codec = Codec::builtin();
    let mut records = Vec::new();
    let mut first = None;
    for offset in 0..200 {
        // A stock decision about no order (an adjustment's): no order row keeps its id.
        let mut event = sample(EventKind::StockDecided);
        if let Event::StockDecided(e) = &mut event {
            e.order_id = None;
            e.envelope.event_id = uuid::Uuid::new_v4();
        }
        first.get_or_insert_with(|| event.clone());
        let (key, payload) = (event.key().into_bytes(), codec.encode(&event).expect("encode"));
        records.push(LogRecord {
            partition: 0,
            offset,
            key: Some(key),
            payload: Some(payload),
            timestamp_ms: None,
            published_by: None,
            epoch: 1,
            trace_parent: None,
        });
    }
    // Two records nobody can read: one stays parked, one an operator skips.
    for offset in [200, 201] {
        let junk = Some(b"junk".to_vec());
        records.push(LogRecord {
            partition: 0,
            offset,
            key: junk,
            payload: Some(vec![1, 2, 3]),
            timestamp_ms: None,
            published_by: None,
            epoch: 1,
            trace_parent: None,
        });
    }
    let outcome = apply(&store, &codec, &records, 0, TopicRole::Decisions).await;
    assert_eq!((outcome.applied, outcome.dead_lettered), (200, 2));
    // A decision on the orders topic: refused and recorded, resolved at once.
    let forged = sample(EventKind::StockDecided);
    let forged = LogRecord {
        partition: 0,
        offset: 0,
        key: Some(forged.key().into_bytes()),
        payload: Some(codec.encode(&forged).expect("encode")),
        timestamp_ms: None,
        published_by: None,
        epoch: 1,
        trace_parent: None,
    };
    assert_eq!(apply(&store, &codec, &[forged], 0, TopicRole::Orders).await.dead_lettered, 1);
    let parked = store.reads().dead_letters("g").await.expect("dead letters");
    store.operations().skip_dead_letters("g", &DeadLetterSelection::Ids(vec![parked[1].id])).await.expect("skip");
    let (ids_before, letters_before) = (count(&store, "processed_events").await, count(&store, "dead_letters").await);

    // Inside the window nothing goes, and a copy of an applied event is still dropped.
    let pruned = store.operations().prune(Retention::default()).await.expect("prune").expect("not contended");
    assert_eq!((pruned.event_ids, pruned.dead_letters), (0, 0));
    let copy = first.expect("an event");
    let again = LogRecord {
        partition: 0,
        offset: 202,
        key: Some(copy.key().into_bytes()),
        payload: Some(codec.encode(&copy).expect("encode")),
        timestamp_ms: None,
        published_by: None,
        epoch: 1,
        trace_parent: None,
    };
    assert_eq!(
        apply(&store, &codec, &[again], 202, TopicRole::Decisions).await.duplicates,
        1,
        "deduplicated inside the window"
    );

    // Past the window (here: any age), ids and the resolved dead letters (the skipped one,
    // the refused one) go; the parked stays.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let none = Retention { dedupe_window: Duration::ZERO, resolved_dead_letters: Duration::ZERO };
    let pruned = store.operations().prune(none).await.expect("prune").expect("not contended");
    let (ids_after, letters_after) = (count(&store, "processed_events").await, count(&store, "dead_letters").await);
    assert_eq!((ids_before, ids_after, pruned.event_ids), (200, 0, 200));
    assert_eq!((letters_before, letters_after, pruned.dead_letters), (3, 1, 2));
    let left = store.reads().list_dead_letters_with(Some("g"), None, false, 10).await.expect("left");
    assert_eq!(left.iter().map(|d| d.id).collect::<Vec<_>>(), vec![parked[0].id], "the parked one stays");
    eprintln!("rows before/after pruning: processed_events {ids_before}/{ids_after}, dead_letters {letters_before}/{letters_after}");
}

#[tokio::test]
async fn pruning_forgets_ids_past_the_window_and_resolved_dead_letters_but_keeps_dedupe_inside_it_postgres() {
    pruning_keeps_the_tables_bounded(&common::fresh_database().await).await;
}

#[tokio::test]
async fn pruning_forgets_ids_past_the_window_and_resolved_dead_letters_but_keeps_dedupe_inside_it_sqlite() {
    pruning_keeps_the_tables_bounded(&common::fresh_sqlite_url()).await;
}

/// The consumers keep event ids at least as long as the topic keeps records; the topic's
/// retention comes from the broker.
#[tokio::test]
async fn a_topics_retention_is_read_from_the_broker() {
    let topic = common::fresh_topic("retention", 1).await;
    let retention =
        infra::topics::retention(&common::kafka(), &topic, Duration::from_secs(10)).await.expect("describe");
    // Kafka's default, log.retention.hours = 168, as the local broker leaves it.
    assert_eq!(retention, Some(Duration::from_secs(7 * 24 * 3600)));
}
