//! Orders placed, paid, shipped and cancelled through the checkout show up in all three
//! views with exactly the values the events imply, on PostgreSQL and on SQLite, and both
//! databases hold identical rows for the same log. The order process and the stock group
//! run once (on PostgreSQL); their decisions are in the log, which both databases project.
use crate::common;

use std::time::Duration;

use consumers::member::run_member;
use projections::model::fulfilment::FulfilmentStatus;
use projections::model::payment::PaymentStatus;
use projections::store::{InventoryLevel, Store};
use projections::ProjectionKind;
use serde_json::{json, Value};

async fn post_ok(app: &common::TestCheckout, path: &str, body: Value) -> Value {
    let (status, answer) = app.post(path, &body, None).await;
    assert_eq!(status, 202, "{path}: {answer}");
    answer
}

fn order(lines: Value) -> Value {
    json!({"customer_id": "c-1", "currency": "EUR", "lines": lines, "ship_to": {"country": "DE"}})
}

/// The warehouse's stock, taken in before the story: adjustments and orders live on
/// different partitions, so an order placed with its stock could be decided before it.
async fn stock_up(app: &common::TestCheckout) {
    post_ok(app, "/inventory/SKU-1/adjustments", json!({"warehouse":"BER-1","delta":10,"reason":"received"})).await;
    post_ok(app, "/inventory/SKU-2/adjustments", json!({"warehouse":"BER-1","delta":5,"reason":"received"})).await;
}

/// Appends a small, known story; returns the three order ids.
async fn append_story(app: &common::TestCheckout) -> (String, String, String) {
    let a = post_ok(app, "/orders", order(json!([{"sku":"SKU-1","quantity":2,"unit_price_minor":1999},{"sku":"SKU-2","quantity":1,"unit_price_minor":500}]))).await;
    let a = a["order_id"].as_str().expect("id").to_string();
    let b = post_ok(app, "/orders", order(json!([{"sku":"SKU-1","quantity":1,"unit_price_minor":1999}]))).await;
    let b = b["order_id"].as_str().expect("id").to_string();
    let c = post_ok(app, "/orders", order(json!([{"sku":"SKU-2","quantity":3,"unit_price_minor":700}]))).await;
    let c = c["order_id"].as_str().expect("id").to_string();
    for status in ["authorized", "captured"] {
        post_ok(
            app,
            &format!("/orders/{a}/payments"),
            json!({"status": status, "amount_minor": 4498, "provider_ref": "p-a"}),
        )
        .await;
    }
    for status in ["packed", "shipped", "delivered"] {
        post_ok(app, &format!("/orders/{a}/shipments"), json!({"status": status, "warehouse": "BER-1"})).await;
    }
    post_ok(app, &format!("/orders/{b}/cancel"), json!({})).await;
    post_ok(
        app,
        &format!("/orders/{c}/payments"),
        json!({"status": "captured", "amount_minor": 2100, "provider_ref": "p-c"}),
    )
    .await;
    // A payment for an order nobody placed: refused by payment and fulfilment.
    let ghost = uuid::Uuid::new_v4();
    post_ok(
        app,
        &format!("/orders/{ghost}/payments"),
        json!({"status": "captured", "amount_minor": 1, "provider_ref": "p-x"}),
    )
    .await;
    (a, b, c)
}

async fn project_all(store: &Store, topic: &str, suffix: &str, processes: Option<&common::Processes>) {
    let kafka = common::kafka();
    let mut members = Vec::new();
    for kind in ProjectionKind::ALL {
        let group = format!("{}-{suffix}", kind.name());
        members.push((
            group.clone(),
            run_member(common::member_config(kind, topic, &group), &kafka, store.clone()).expect("member"),
        ));
    }
    let groups: Vec<(String, String)> = members
        .iter()
        .zip(ProjectionKind::ALL)
        .flat_map(|((g, _), kind)| orderflow::kit::reading(kind, g, topic))
        .collect();
    match processes {
        Some(processes) => processes.settle(store, &groups).await,
        None => {
            for ((group, _), kind) in members.iter().zip(ProjectionKind::ALL) {
                common::wait_group_caught_up(store, &kafka, kind, group, topic).await;
            }
        }
    }
    for (_, member) in members {
        member.stop().await.expect("clean stop");
    }
}

fn level(sku: &str, on_hand: i64, reserved: i64, shipped: i64) -> InventoryLevel {
    InventoryLevel { sku: sku.into(), on_hand, reserved, shipped, available: on_hand - reserved, region: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_views_show_exactly_what_the_events_imply_on_postgres_and_sqlite_alike() {
    let topic = common::fresh_topic("story", 4).await;
    let app = common::TestCheckout::spawn(&common::kafka(), &topic, Duration::from_secs(5)).await;
    let pg = Store::connect(&common::fresh_database().await).await.expect("postgres");
    let lite = Store::connect(&common::fresh_sqlite_url()).await.expect("sqlite");
    stock_up(&app).await;
    // The story is on the log before the processes start, so a's shipment is read before
    // its reservation is decided whatever the machine's load (the stock group still applies
    // the restock before the orders' requests).
    let (a, b, c) = append_story(&app).await;
    let processes = common::Processes::start(&pg, &topic, Duration::from_secs(900));
    processes.settle(&pg, &[]).await;

    project_all(&pg, &topic, "pg", Some(&processes)).await;
    processes.stop().await;
    project_all(&lite, &topic, "lite", None).await;

    let snapshot = pg.reads().snapshot().await.expect("snapshot");
    // a's units stay reserved: its shipment came before its reservation was decided, so
    // the order process refused it (a stays paid, not shipped); b's units came back when it
    // was cancelled; c holds 3 of SKU-2.
    assert_eq!(snapshot.inventory_levels, vec![level("SKU-1", 10, 2, 0), level("SKU-2", 5, 4, 0)]);
    let mut statuses = Vec::new();
    for id in [&a, &b, &c] {
        let row = pg.reads().order_status(id.parse().expect("uuid")).await.expect("status").expect("decided");
        statuses.push(row.status.as_str());
    }
    assert_eq!(statuses, ["paid", "cancelled", "paid"]);
    let group = pg.group(projections::ProcessKind::OrderProcess);
    let refused = pg.reads().list_dead_letters_with(Some(&group), None, false, 100).await.expect("dead letters");
    assert!(refused.iter().any(|d| d.reason.contains("ShipmentPacked refused")), "{refused:?}");

    let payment =
        |id: &str| snapshot.payments.iter().find(|p| p.order_id.to_string() == id).expect("payment row").clone();
    let pa = payment(&a);
    assert_eq!(
        (pa.order_total_minor, pa.authorized_minor, pa.captured_minor, pa.refunded_minor),
        (4498, 4498, 4498, 0)
    );
    assert_eq!((pa.status.as_str(), pa.currency.as_str()), ("captured", "EUR"));
    assert_eq!(payment(&b).status, PaymentStatus::Cancelled);
    assert_eq!(
        (payment(&c).status.as_str(), payment(&c).captured_minor, payment(&c).order_total_minor),
        ("captured", 2100, 2100)
    );
    assert_eq!(snapshot.payments.len(), 3, "no phantom rows");

    let fulfilment = |id: &str| snapshot.fulfilment.iter().find(|f| f.order_id.to_string() == id).expect("row").clone();
    let fa = fulfilment(&a);
    assert_eq!((fa.status.as_str(), fa.warehouse.as_deref()), ("delivered", Some("BER-1")));
    assert!(fa.paid_at.is_some() && fa.shipped_at.is_some() && fa.delivered_at.is_some());
    assert_eq!(fulfilment(&b).status, FulfilmentStatus::Cancelled);
    assert_eq!(fulfilment(&c).status, FulfilmentStatus::ReadyToShip);

    // The ghost payment is refused and recorded by payment and fulfilment; nothing is
    // parked, nothing waits for an operator.
    for (group, refused) in [("inventory-pg", 0), ("payment-pg", 1), ("fulfilment-pg", 1)] {
        assert!(pg.reads().dead_letters(group).await.expect("dead letters").is_empty(), "{group}");
        let recorded = pg.reads().list_dead_letters_with(Some(group), None, false, 10).await.expect("recorded");
        assert_eq!(recorded.len(), refused, "{group}: {recorded:?}");
        assert!(recorded.iter().all(|d| d.reason.starts_with("refused: ") && d.status.as_str() == "skipped"));
    }

    // The analyst views answer in SQL on both databases.
    let row = sqlx::query_scalar::<_, String>("SELECT status FROM order_fulfilment WHERE order_id = $1")
        .bind(&a)
        .fetch_one(lite.pool())
        .await
        .expect("view");
    assert_eq!(row, "delivered");
    let available: i64 = sqlx::query_scalar("SELECT available FROM inventory_levels WHERE sku = 'SKU-2'")
        .fetch_one(pg.pool())
        .await
        .expect("view");
    assert_eq!(available, 1);

    assert_eq!(
        lite.reads().snapshot().await.expect("sqlite snapshot"),
        snapshot,
        "SQLite and PostgreSQL differ for the same log"
    );
}
