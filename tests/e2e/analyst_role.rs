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

    for view in projections::ProjectionKind::all_views() {
        sqlx::query(&format!("SELECT * FROM {view}"))
            .fetch_all(&mut analyst)
            .await
            .unwrap_or_else(|e| panic!("{view}: {e}"));
    }
    let refused = [
        "SELECT * FROM consumer_offsets",
        "SELECT * FROM dead_letters",
        "SELECT * FROM processed_events",
        "SELECT * FROM history_events",
        "SELECT * FROM inventory_sku",
        "INSERT INTO inventory_sku (sku, on_hand, reserved, shipped) VALUES ('X', 1, 0, 0)",
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
