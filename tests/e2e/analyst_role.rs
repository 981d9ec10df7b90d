//! On PostgreSQL, analysts log in as `orderflow_analyst`: they read the views and cannot
//! write anything, nor read the offset or dead-letter tables.
use crate::common;

use projections::store::Store;
use sqlx::Connection;

#[tokio::test]
async fn the_analyst_role_reads_the_views_and_nothing_else() {
    let url = common::fresh_database().await;
    let _store = Store::connect(&url).await.expect("migrate");
    let (scheme, rest) = url.split_once("://").expect("url");
    let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let analyst_url = format!("{scheme}://orderflow_analyst@{host_and_db}");
    let mut analyst = sqlx::PgConnection::connect(&analyst_url).await.expect("analyst logs in");

    for view in projections::store::schema::analyst_views() {
        sqlx::query(&format!("SELECT * FROM {view}"))
            .fetch_all(&mut analyst)
            .await
            .unwrap_or_else(|e| panic!("{view}: {e}"));
    }
    let refused = [
        "SELECT * FROM consumer_offsets",
        "SELECT * FROM dead_letters",
        "SELECT * FROM processed_events",
        "SELECT * FROM history_entries",
        "SELECT * FROM inventory_pools",
        "INSERT INTO inventory_pools (pool, sku, on_hand, reserved, shipped, version) VALUES ('', 'X', 1, 0, 0, 1)",
        "UPDATE payment_orders SET status = 'refunded'",
        "DELETE FROM inventory_levels",
        "CREATE TABLE sneaky (id int)",
    ];
    for sql in refused {
        let err = sqlx::query(sql).execute(&mut analyst).await.expect_err(sql);
        let message = err.to_string();
        assert!(message.contains("permission denied") || message.contains("cannot"), "{sql}: {message}");
    }
}

/// `url` with its user replaced by `role` (no password: the local server trusts loopback).
fn as_role(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("url");
    let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{role}@{host_and_db}")
}

async fn refused(conn: &mut sqlx::PgConnection, who: &str, statements: &[&str]) {
    for sql in statements {
        let err = sqlx::query(sql).execute(&mut *conn).await.expect_err(&format!("{who} must not: {sql}"));
        let message = err.to_string();
        assert!(message.contains("permission denied") || message.contains("must be owner"), "{who}: {sql}: {message}");
    }
}

#[tokio::test]
async fn each_service_works_under_its_own_role_and_no_role_can_do_what_it_must_not() {
    use projections::store::schema::{CHECKOUT_ROLE, CONSUMER_ROLE, QUERY_ROLE};
    use projections::store::{Batch, LogRecord, SessionLimits};
    use schemas::samples::sample;
    use schemas::{Codec, EventKind};

    let owner_url = common::fresh_database().await;
    common::run_orderflow(&["migrate", "--database-url", &owner_url]);

    // The checkout keeps its keys.
    let checkout = producers::idempotency::IdempotencyStore::connect(
        &as_role(&owner_url, CHECKOUT_ROLE),
        std::time::Duration::from_secs(5),
    )
    .await
    .expect("the checkout connects under its role");
    let claim = checkout.claim("shop POST /orders", "k-1", "h").await.expect("the checkout claims a key");
    assert!(matches!(claim, producers::idempotency::Claim::Claimed { .. }), "{claim:?}");

    // A member applies a batch, and a rebuild makes a new generation and switches to it.
    let consumer = Store::connect(&as_role(&owner_url, CONSUMER_ROLE)).await.expect("a member connects under its role");
    let codec = Codec::builtin();
    let placed = sample(EventKind::OrderPlaced);
    let records = [LogRecord {
        partition: 0,
        offset: 0,
        key: Some(placed.key().into_bytes()),
        payload: Some(codec.encode(&placed).expect("encode")),
        timestamp_ms: None,
        published_by: Some("shop".into()),
        epoch: 1,
        trace_parent: None,
    }];
    let batch = Batch {
        group: "orderflow-payment",
        topic: "t",
        role: schemas::TopicRole::Orders,
        records: &records,
        read_from: &Default::default(),
    };
    let applied = consumer
        .batches()
        .apply(projections::ProjectionKind::Payment, &batch, &codec)
        .await
        .expect("the member applies under its role");
    assert_eq!(applied.applied, 1);
    let next = consumer
        .operations()
        .prepare_rebuild(projections::ProjectionKind::Payment)
        .await
        .expect("a rebuild creates its tables under the consumers' role");
    assert!(next.generation > 1);
    let rebuilt = Batch {
        group: &next.group,
        topic: "t",
        role: schemas::TopicRole::Orders,
        records: &records,
        read_from: &Default::default(),
    };
    consumer
        .batches()
        .apply(projections::ProjectionKind::Payment, &rebuilt, &codec)
        .await
        .expect("the rebuild applies");
    let switched =
        consumer.operations().try_switch(&next, &[(None, "t".to_string())], std::time::Duration::from_secs(5)).await;
    assert!(switched.expect("the consumers' role repoints the views").is_some(), "switched");

    // The query API reads the views and what read-your-writes needs.
    let reader = Store::connect_with(&as_role(&owner_url, QUERY_ROLE), SessionLimits::READER)
        .await
        .expect("the query API connects under its role");
    let order = placed.order_id().expect("order id");
    let view = reader.reads().order_view(&order.to_string()).await.expect("the query API reads the views");
    assert!(view.is_some(), "the query API sees the order");
    reader.reads().stored_offsets("orderflow-payment", "t", &[0]).await.expect("the query API reads offsets");

    let mut query = sqlx::PgConnection::connect(&as_role(&owner_url, QUERY_ROLE)).await.expect("query role");
    refused(
        &mut query,
        "the query API",
        &[
            "INSERT INTO consumer_offsets (group_id, topic, partition_id, next_offset) VALUES ('g', 't', 0, 5)",
            "UPDATE payment_orders SET status = 'refunded'",
            "DELETE FROM dead_letters",
            "SELECT * FROM checkout_keys",
            "SELECT * FROM payment_orders",
            "CREATE TABLE sneaky (id int)",
        ],
    )
    .await;
    let mut checkout = sqlx::PgConnection::connect(&as_role(&owner_url, CHECKOUT_ROLE)).await.expect("checkout role");
    refused(
        &mut checkout,
        "the checkout",
        &[
            "SELECT * FROM order_payments",
            "SELECT * FROM payment_orders",
            "SELECT * FROM consumer_offsets",
            "INSERT INTO dead_letters (group_id) VALUES ('g')",
            "DROP TABLE processed_events",
            "CREATE TABLE sneaky (id int)",
        ],
    )
    .await;
    let mut consumer = sqlx::PgConnection::connect(&as_role(&owner_url, CONSUMER_ROLE)).await.expect("consumer role");
    refused(&mut consumer, "a consumer", &["SELECT * FROM checkout_keys", "DELETE FROM checkout_keys"]).await;
}
