//! The order process's batches lock their orders, not their partitions whole: a batch of
//! one topic does not wait for a transaction holding another order on its partition (a
//! batch of the other topic), and waits for one holding its own order, or holding its
//! partition exclusively (a round of timers). PostgreSQL only: SQLite serializes writers.
//!
//! The test holds the locks itself, as the store takes them: a partition under
//! `hashtext(<group>)`, an order under `hashtext('<group>:orders')` keyed by its id's first
//! four bytes.
use std::collections::BTreeMap;
use std::time::Duration;

use projections::store::{Batch, LogRecord, Store};
use projections::ProcessKind;
use schemas::samples::{readdressed, sample};
use schemas::{Codec, EventKind, TopicRole};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const GROUP: &str = "order-process";

fn order_key(order: Uuid) -> i32 {
    let b = order.as_bytes();
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Applies `kind` of `order` at `offset` of partition 0, in a task of its own.
fn apply_in_task(store: &Store, kind: EventKind, order: Uuid, offset: i64) -> tokio::task::JoinHandle<()> {
    let store = store.clone();
    tokio::spawn(async move {
        let codec = Codec::builtin();
        let event = readdressed(sample(kind), order);
        let record = LogRecord {
            partition: 0,
            offset,
            key: Some(event.key().into_bytes()),
            payload: Some(codec.encode(&event).expect("encode")),
            timestamp_ms: None,
            published_by: Some("checkout".into()),
            epoch: 1,
            trace_parent: None,
        };
        let read_from = BTreeMap::from([(0, offset)]);
        let records = [record];
        let batch =
            Batch { group: GROUP, topic: "orders", role: TopicRole::Orders, records: &records, read_from: &read_from };
        let outcome = store.batches().apply(ProcessKind::OrderProcess, &batch, &codec).await.expect("batch");
        assert_eq!(outcome.applied, 1, "{outcome:?}");
    })
}

/// Whether `task` is still running after a while (waiting for a lock).
async fn still_waiting(task: &tokio::task::JoinHandle<()>) -> bool {
    tokio::time::sleep(Duration::from_millis(500)).await;
    !task.is_finished()
}

async fn finishes(task: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("the batch finished").expect("the batch's task");
}

#[tokio::test]
async fn an_order_process_batch_waits_only_for_its_own_orders_and_for_timers_on_its_partitions_postgres() {
    let Some(url) = crate::support::postgres_database().await else { return };
    let store = Store::connect(&url).await.expect("store");
    let mut holder = PgConnection::connect(&url).await.expect("a second connection");
    let lock_order = |order: Uuid| {
        format!("SELECT pg_advisory_xact_lock_shared(hashtext('{GROUP}'), 0), pg_advisory_xact_lock(hashtext('{GROUP}:orders'), {})", order_key(order))
    };
    let (mine, other) = (Uuid::new_v4(), Uuid::new_v4());

    // Another order on partition 0 held: the batch goes ahead.
    sqlx::query("BEGIN").execute(&mut holder).await.expect("begin");
    sqlx::query(&lock_order(other)).execute(&mut holder).await.expect("lock another order");
    finishes(apply_in_task(&store, EventKind::OrderPlaced, mine, 0)).await;

    // Its own order held: the batch waits until that transaction ends.
    sqlx::query(&lock_order(mine)).execute(&mut holder).await.expect("lock its order");
    let waiting = apply_in_task(&store, EventKind::OrderCancelled, mine, 1);
    assert!(still_waiting(&waiting).await, "a batch of an order another transaction holds went ahead");
    sqlx::query("COMMIT").execute(&mut holder).await.expect("commit");
    finishes(waiting).await;

    // Its partition held exclusively, as a round of timers holds it: the batch waits too.
    sqlx::query("BEGIN").execute(&mut holder).await.expect("begin");
    sqlx::query(&format!("SELECT pg_advisory_xact_lock(hashtext('{GROUP}'), 0)"))
        .execute(&mut holder)
        .await
        .expect("lock the partition");
    let waiting = apply_in_task(&store, EventKind::OrderPlaced, other, 2);
    assert!(still_waiting(&waiting).await, "a batch went ahead of a round of timers on its partition");
    sqlx::query("COMMIT").execute(&mut holder).await.expect("commit");
    finishes(waiting).await;
}
