//! `orderflow rebuild` under live load, with real processes: a `consume` member serving
//! the live generation, the checkout taking orders, a reader polling the view, and the
//! rebuild building generation 2 beside it and switching. Then `groups` shows the member
//! followed the switch, and `--drop-old` removes the old tables.
use crate::common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use consumers::member::run_member;
use projections::store::Store;
use projections::ProjectionKind;
use serde_json::{json, Value};
use sqlx::Row;

async fn place_and_pay(checkout: &common::TestCheckout, n: u64) {
    let body = json!({"customer_id": format!("c-{n}"), "currency": "EUR",
        "lines": [{"sku": format!("SKU-{}", n % 7), "quantity": 1 + n % 3, "unit_price_minor": 1000}], "ship_to": {"country": "DE"}});
    let (status, placed) = checkout.post("/orders", &body, None).await;
    assert_eq!(status, 202, "{placed}");
    let order = placed["order_id"].as_str().expect("order id").to_string();
    let payment = json!({"status": "captured", "amount_minor": 1000, "provider_ref": "psp"});
    let (status, answer) = checkout.post(&format!("/orders/{order}/payments"), &payment, None).await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_rebuild_under_live_load_switches_to_identical_rows_and_no_reader_ever_sees_rows_missing() {
    rebuild_under_live_load(common::fresh_database().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_rebuild_on_sqlite_switches_the_same_way() {
    rebuild_under_live_load(common::fresh_sqlite_url()).await;
}

async fn rebuild_under_live_load(database_url: String) {
    let kafka = common::kafka();
    let topic = common::fresh_topic("rebuild", 3).await;
    let checkout = Arc::new(common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await);
    let prefix = common::fresh_group_prefix();
    let store = Store::connect(&database_url).await.expect("store").with_group_prefix(&prefix).expect("prefix");
    let (live_group, next_group) = (format!("{prefix}-payment"), format!("{prefix}-payment-g2"));
    let brokers = std::env::var("ORDERFLOW_BROKERS").expect("brokers");
    let env = [
        ("ORDERFLOW_BROKERS", brokers.as_str()),
        ("ORDERFLOW_DATABASE_URL", database_url.as_str()),
        ("ORDERFLOW_TOPIC", topic.as_str()),
        ("ORDERFLOW_GROUP_PREFIX", prefix.as_str()),
    ];
    let _consume =
        common::Child::spawn(&["consume", "payment", "--session-timeout", "6s", "--max-poll-interval", "10s"], &env);
    for n in 0..150 {
        place_and_pay(&checkout, n).await;
    }
    common::wait_caught_up(&store, &kafka, &live_group, &topic).await;

    // Live load and a reader that remembers every order it has seen.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (checkout, stop) = (checkout.clone(), stop.clone());
        async move {
            let mut n = 1_000;
            while !stop.load(Ordering::Relaxed) {
                place_and_pay(&checkout, n).await;
                n += 1;
            }
            n - 1_000
        }
    });
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn({
        let (pool, stop, reads) = (store.pool().clone(), stop.clone(), reads.clone());
        async move {
            let mut seen: HashSet<String> = HashSet::new();
            let mut missing = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let rows =
                    sqlx::query("SELECT order_id FROM order_payments").fetch_all(&pool).await.expect("read the view");
                let now: HashSet<String> = rows.iter().map(|r| r.get::<String, _>("order_id")).collect();
                missing.extend(seen.difference(&now).cloned());
                seen.extend(now);
                reads.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            missing
        }
    });

    let args = ["rebuild", "payment", "--json"];
    let output = tokio::task::spawn_blocking({
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
                .args(args)
                .envs(env)
                .env("RUST_LOG", "warn")
                .output()
                .expect("run rebuild")
        }
    })
    .await
    .expect("join");
    assert!(output.status.success(), "rebuild failed: {}", String::from_utf8_lossy(&output.stderr));
    let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(events.first().map(|e| e["event"].clone()), Some(json!("started")), "{events:?}");
    assert_eq!(events.last().map(|e| e["event"].clone()), Some(json!("switched")), "{events:?}");

    tokio::time::sleep(Duration::from_secs(1)).await; // load goes on across the switch
    stop.store(true, Ordering::Relaxed);
    let written = load.await.expect("load");
    let missing = reader.await.expect("reader");
    assert!(written > 0, "load ran during the rebuild");
    assert!(reads.load(Ordering::Relaxed) > 10, "the reader read during the rebuild");
    assert!(missing.is_empty(), "a reader saw {} order(s) disappear, e.g. {:?}", missing.len(), missing.first());

    let live = store.reads().live_projection(ProjectionKind::Payment).await.expect("live");
    assert_eq!((live.generation, &live.group), (2, &next_group));
    // The running `consume` member followed the switch and keeps generation 2 current.
    common::wait_caught_up(&store, &kafka, &live.group, &topic).await;
    let reference_url = common::fresh_database().await;
    let reference = Store::connect(&reference_url).await.expect("reference store");
    let member =
        run_member(common::member_config(ProjectionKind::Payment, &topic, "reference"), &kafka, reference.clone())
            .expect("reference member");
    common::wait_caught_up(&reference, &kafka, "reference", &topic).await;
    member.stop().await.expect("stop");
    let rebuilt = store.reads().snapshot().await.expect("snapshot").payments;
    assert_eq!(rebuilt.len(), 150 + written as usize);
    assert_eq!(
        rebuilt,
        reference.reads().snapshot().await.expect("reference").payments,
        "rebuilt rows equal a calm build from 0"
    );

    // Operators see the member in the new group, nothing lagging.
    let groups = common::run_orderflow_with(&["groups", "--json"], &env);
    let groups: Vec<Value> = groups.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let g2 = groups.iter().find(|g| g["group"] == next_group.as_str()).expect("the new group is listed");
    assert_eq!(g2["live_for"], json!({"projection": "payment", "generation": 2}));
    assert_eq!(g2["lag"], 0, "{g2}");
    assert_eq!(g2["dead_letters"], 0);
    let owned: Vec<i64> = g2["members"]
        .as_array()
        .expect("members")
        .iter()
        .flat_map(|m| m["partitions"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_i64())
        .collect();
    assert_eq!(owned, vec![0, 1, 2], "the consume member owns every partition: {g2}");
    assert!(g2["last_applied"].is_string());

    // The old generation stays until dropped.
    let count = |table: &'static str| {
        let pool = store.pool().clone();
        async move { sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}")).fetch_one(&pool).await }
    };
    assert!(count("payment_orders").await.is_ok(), "generation 1 is kept");
    let dropped = common::run_orderflow_with(&["rebuild", "payment", "--drop-old", "--no-rebuild", "--json"], &env);
    assert!(dropped.contains("\"dropped\""), "{dropped}");
    assert!(count("payment_orders").await.is_err(), "generation 1 is gone");
    assert!(count("order_payments").await.is_ok(), "the view still answers");

    // A second rebuild, at rest, changes nothing (reliability invariant I9).
    let before = store.reads().snapshot().await.expect("snapshot").payments;
    common::run_orderflow_with(&["rebuild", "payment", "--drop-old", "--json"], &env);
    assert_eq!(store.reads().live_projection(ProjectionKind::Payment).await.expect("live").generation, 3);
    assert_eq!(store.reads().snapshot().await.expect("snapshot").payments, before, "a second rebuild changes nothing");
    assert!(count("payment_orders_g2").await.is_err(), "--drop-old dropped generation 2");
}
