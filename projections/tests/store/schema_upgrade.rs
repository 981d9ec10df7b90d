//! A database created by an earlier release (payment rows without capture times, dead
//! letters without a status) still starts: migrations add the missing columns, the views
//! answer, and the old rows survive.
use crate::support;

use projections::store::Store;
use sqlx::Connection;

const EARLIER_RELEASE: [&str; 3] = [
    "CREATE TABLE payment_orders (order_id TEXT PRIMARY KEY, currency TEXT NOT NULL, order_total_minor BIGINT NOT NULL,
     authorized_minor BIGINT NOT NULL, captured_minor BIGINT NOT NULL, refunded_minor BIGINT NOT NULL, status TEXT NOT NULL)",
    "INSERT INTO payment_orders VALUES ('00000000-0000-4000-8000-000000000001', 'EUR', 100, 100, 100, 0, 'captured')",
    "CREATE TABLE dead_letters (id BIGSERIAL PRIMARY KEY, group_id TEXT NOT NULL, topic TEXT NOT NULL,
     partition_id BIGINT NOT NULL, record_offset BIGINT NOT NULL, record_key TEXT, order_id TEXT, reason TEXT NOT NULL,
     payload BYTEA, created_at_ms BIGINT NOT NULL, UNIQUE (group_id, topic, partition_id, record_offset))",
];

#[tokio::test]
async fn a_database_from_an_earlier_release_gains_the_new_columns_and_keeps_its_rows_postgres() {
    let Some(url) = support::postgres_database().await else { return };
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    for statement in EARLIER_RELEASE {
        sqlx::query(statement).execute(&mut conn).await.expect(statement);
    }
    sqlx::query(
        "INSERT INTO dead_letters (group_id, topic, partition_id, record_offset, reason, created_at_ms)
                 VALUES ('orderflow-payment', 'orders', 0, 7, 'old', 1)",
    )
    .execute(&mut conn)
    .await
    .expect("old dead letter");

    let store = Store::connect(&url).await.expect("migrations upgrade the old tables");
    let view =
        store.reads().order_view("00000000-0000-4000-8000-000000000001").await.expect("view").expect("the old row");
    assert_eq!(view.payment.expect("payment").captured_minor, 100);
    let parked = store.reads().dead_letters("orderflow-payment").await.expect("dead letters");
    assert_eq!((parked.len(), parked[0].status.as_str()), (1, "parked"), "old dead letters still park their order");
    // And a second start changes nothing.
    Store::connect(&url).await.expect("idempotent");
}

/// After an upgrade from `old_table`: it is gone, and starting again changes nothing.
async fn assert_old_table_gone_and_restart_is_idempotent(store: &Store, url: &str, old_table: &str) {
    let probe = format!("SELECT 1 FROM {old_table}");
    assert!(sqlx::query(&probe).fetch_optional(store.pool()).await.is_err(), "{old_table} is gone");
    Store::connect(url).await.expect("a second start changes nothing");
}

/// Until this release each order's history was one JSON row rewritten on every event; a
/// database holding such rows shows the same timeline after the upgrade, from one row per
/// event, and the old table is gone.
async fn history_rows_are_upgraded(url: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
    let order = "00000000-0000-4000-8000-000000000002";
    let events = r#"[{"event_id":"00000000-0000-4000-8000-0000000000a1","kind":"OrderPlaced","occurred_at_us":1,"partition":2,"offset":7,"summary":"placed"},
                    {"event_id":"00000000-0000-4000-8000-0000000000a2","kind":"PaymentCaptured","occurred_at_us":2,"partition":2,"offset":9,"summary":"paid"}]"#;
    sqlx::query("CREATE TABLE history_orders (order_id TEXT PRIMARY KEY, events TEXT NOT NULL)")
        .execute(&mut conn)
        .await
        .expect("old table");
    sqlx::query("INSERT INTO history_orders VALUES ($1, $2)")
        .bind(order)
        .bind(events)
        .execute(&mut conn)
        .await
        .expect("row");
    drop(conn);

    let store = Store::connect(url).await.expect("the upgrade runs at start-up");
    let history = store.reads().order_history(order).await.expect("history").expect("the order's history");
    let seen: Vec<(&str, i64)> = history.iter().map(|e| (e.kind.as_str(), e.offset)).collect();
    assert_eq!(seen, [("OrderPlaced", 7), ("PaymentCaptured", 9)]);
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM history_entries").fetch_one(store.pool()).await.expect("count");
    assert_eq!(rows, 2, "one row per event");
    assert_old_table_gone_and_restart_is_idempotent(&store, url, "history_orders").await;
}

on_each_database!(an_earlier_releases_history_rows_become_one_row_per_event_with_the_same_timeline => history_rows_are_upgraded);

/// The previous release kept one row per event in `history_events`, without who published
/// it: the rows move to `history_entries` with an unknown publisher, and the timeline is the
/// same.
async fn history_events_gain_a_publisher_column(url: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
    let order = "00000000-0000-4000-8000-000000000003";
    sqlx::query(
        "CREATE TABLE history_events (order_id TEXT NOT NULL, event_id TEXT NOT NULL, kind TEXT NOT NULL,
         occurred_at_us BIGINT NOT NULL, partition_id BIGINT NOT NULL, record_offset BIGINT NOT NULL,
         summary TEXT NOT NULL, PRIMARY KEY (order_id, event_id))",
    )
    .execute(&mut conn)
    .await
    .expect("previous table");
    sqlx::query("INSERT INTO history_events VALUES ($1, '00000000-0000-4000-8000-0000000000b1', 'OrderPlaced', 1, 0, 4, 'placed')")
        .bind(order)
        .execute(&mut conn)
        .await
        .expect("row");
    drop(conn);

    let store = Store::connect(url).await.expect("the upgrade runs at start-up");
    let history = store.reads().order_history(order).await.expect("history").expect("the order's history");
    let seen: Vec<(&str, i64, Option<&str>)> =
        history.iter().map(|e| (e.kind.as_str(), e.offset, e.published_by.as_deref())).collect();
    assert_eq!(seen, [("OrderPlaced", 4, None)]);
    assert_old_table_gone_and_restart_is_idempotent(&store, url, "history_events").await;
}

on_each_database!(the_previous_releases_history_rows_move_to_history_entries_with_an_unknown_publisher => history_events_gain_a_publisher_column);
