//! Losing state and getting it back from the log: the processes' decided state rebuilt
//! from their inputs and decisions, the checkout's idempotency keys rebuilt from the
//! records it appended, and the whole database lost while orders flow.
use crate::common;
use crate::order_process::{decoded_log, Shop};

use std::collections::BTreeMap;
use std::time::Duration;

use projections::process::order::OrderStatus;
use serde_json::{json, Value};
use sqlx::Row;

/// The processes' tables as rows of text, ordered: everything but when a row was last
/// written (the live process stamps its batch's time, the rebuild the decision's).
async fn process_state(pool: &sqlx::AnyPool) -> BTreeMap<&'static str, Vec<String>> {
    let queries = [
        (
            "process_orders",
            "SELECT order_id, status, COALESCE(reason, '') AS a, correlation_id AS b, lines AS c,
             CAST(captured_minor AS TEXT) AS d, CAST(refund_requested_minor AS TEXT) AS e,
             CAST(partition_id AS TEXT) AS f, COALESCE(CAST(due_at_us AS TEXT), 'none') AS g
             FROM process_orders ORDER BY order_id",
        ),
        (
            "stock_levels",
            "SELECT sku AS order_id, CAST(on_hand AS TEXT) AS status, CAST(reserved AS TEXT) AS a,
             CAST(shipped AS TEXT) AS b, CAST(version AS TEXT) AS c, '' AS d, '' AS e, '' AS f, '' AS g
             FROM stock_levels ORDER BY sku",
        ),
        (
            "stock_holds",
            "SELECT sku || '/' || order_id AS order_id, status, CAST(quantity AS TEXT) AS a, '' AS b, '' AS c,
             '' AS d, '' AS e, '' AS f, '' AS g FROM stock_holds ORDER BY sku, order_id",
        ),
    ];
    let mut state = BTreeMap::new();
    for (table, sql) in queries {
        let rows = sqlx::query(sql).fetch_all(pool).await.expect("read process state");
        let text = rows
            .iter()
            .map(|r| {
                ["order_id", "status", "a", "b", "c", "d", "e", "f", "g"]
                    .iter()
                    .map(|c| r.try_get::<String, _>(*c).expect("column"))
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        state.insert(table, text);
    }
    state
}

fn env_of(shop: &Shop) -> Vec<(&'static str, String)> {
    vec![
        ("ORDERFLOW_BROKERS", std::env::var("ORDERFLOW_BROKERS").expect("brokers")),
        ("ORDERFLOW_DATABASE_URL", shop.database_url.clone()),
        ("ORDERFLOW_TOPIC", shop.topic.clone()),
        ("ORDERFLOW_GROUP_PREFIX", shop.prefix.clone()),
        ("ORDERFLOW_PAYMENT_TIMEOUT", format!("{}s", shop.payment_timeout.as_secs())),
    ]
}

fn rebuild(target: &str, env: &[(&'static str, String)]) -> Value {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = common::run_orderflow_with(&["rebuild", target, "--json"], &env);
    let line = out.lines().find(|l| l.contains("\"restored\"")).unwrap_or_else(|| panic!("no report: {out}"));
    serde_json::from_str(line).expect("a JSON report")
}

async fn all_ends(shop: &Shop) -> Vec<BTreeMap<i32, i64>> {
    let mut ends = Vec::new();
    for topic in schemas::pipeline_topics(&shop.topic) {
        ends.push(common::log_ends(&shop.kafka, &topic).await);
    }
    ends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_state_dropped_and_rebuilt_from_the_log_equals_what_it_was_and_decides_on_as_before() {
    let mut shop = Shop::open(3, Duration::from_secs(4)).await;
    shop.stock("SKU-A", 12).await;
    shop.stock("SKU-B", 3).await;
    shop.settle().await;
    // A story with every kind of decision: reserved, rejected (B runs out), paid,
    // cancelled with a refund, shipped, expired.
    let mut orders = Vec::new();
    for i in 0..10 {
        let lines: &[(&str, i64)] = if i % 2 == 0 { &[("SKU-A", 1), ("SKU-B", 1)] } else { &[("SKU-A", 1)] };
        orders.push(shop.place(lines).await);
    }
    shop.settle().await;
    let confirmed: Vec<uuid::Uuid> = {
        let mut c = Vec::new();
        for o in &orders {
            if shop.status(*o).await == OrderStatus::Confirmed {
                c.push(*o);
            }
        }
        c
    };
    assert!(confirmed.len() >= 6, "{:?}", shop.statuses(&orders).await);
    for order in &confirmed[..4] {
        shop.capture(*order).await;
    }
    shop.post(&format!("/orders/{}/cancel", confirmed[0]), json!({"reason": "changed mind"})).await;
    let shipped = json!({"status": "shipped", "warehouse": "BER-1", "carrier": "DHL", "tracking": "T1"});
    shop.post(&format!("/orders/{}/shipments", confirmed[1]), shipped).await;
    // The unpaid ones expire.
    tokio::time::sleep(Duration::from_secs(5)).await;
    shop.settle().await;
    // And a few more whose timers are still running when the state is lost.
    for _ in 0..3 {
        orders.push(shop.place(&[("SKU-A", 1)]).await);
    }
    shop.settle().await;
    shop.processes.take().expect("processes").stop().await;
    let counts = shop.statuses(&orders).await;
    for status in [OrderStatus::Rejected, OrderStatus::Paid, OrderStatus::Cancelled, OrderStatus::Shipped] {
        assert!(counts.contains_key(&status), "no {status} order: {counts:?}");
    }
    assert!(counts[&OrderStatus::Expired] >= 1 && counts[&OrderStatus::Confirmed] >= 3, "{counts:?}");
    let pool = shop.store.pool().clone();
    let before = process_state(&pool).await;
    assert!(before["process_orders"].iter().filter(|r| !r.ends_with("|none")).count() >= 3, "running timers");

    for table in ["process_orders", "stock_levels", "stock_holds", "consumer_offsets", "processed_events"] {
        sqlx::query(&format!("DELETE FROM {table}")).execute(&pool).await.expect("delete");
    }
    let ends = all_ends(&shop).await;
    let env = env_of(&shop);
    let stock = rebuild("stock", &env);
    let process = rebuild("order-process", &env);
    assert_eq!((stock["republished"].as_i64(), process["republished"].as_i64()), (Some(0), Some(0)));
    assert_eq!(process_state(&pool).await, before, "the rebuilt state is the state that was lost");
    assert_eq!(shop.store.reads().outbox_len().await.expect("outbox"), 0);
    assert_eq!(all_ends(&shop).await, ends, "the rebuild published nothing");

    // A rebuild refuses while the group runs.
    shop.processes = Some(common::Processes::start(&shop.store, &shop.topic, shop.payment_timeout));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let args = ["rebuild", "stock", "--json"];
    let env_pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(args)
        .envs(env_pairs.iter().copied())
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("stop its members first"), "{refused:?}");

    // Decided on as a calm run decides: the running timers fire once, and ten units serve
    // exactly ten of forty racing orders.
    shop.stock("SKU-Z", 10).await;
    shop.settle().await;
    let racing = futures::future::join_all((0..40).map(|_| shop.place(&[("SKU-Z", 1)]))).await;
    shop.settle().await;
    assert_eq!(
        shop.statuses(&racing).await,
        BTreeMap::from([(OrderStatus::Confirmed, 10), (OrderStatus::Rejected, 30)])
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    shop.settle().await;
    let expiries = crate::order_process::decisions_per_order(
        &decoded_log(&shop.kafka, &schemas::decisions_topic(&shop.topic)).await,
        schemas::EventKind::OrderExpired,
    );
    assert!(expiries.values().all(|n| *n == 1), "each timer fired once: {expiries:?}");
    assert!(expiries.len() >= 4, "{expiries:?}");
    assert_eq!(shop.status(orders[10]).await, OrderStatus::Expired);
    shop.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_key_store_is_lost_and_rebuilt_from_the_log_retries_get_their_first_answers_and_append_nothing() {
    let kafka = common::kafka();
    let topic = common::fresh_topic("keys", 3).await;
    let checkout = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await;
    let checkout = &checkout;
    let order_body = |i: usize| {
        json!({"customer_id": format!("c-{i}"), "currency": "EUR", "ship_to": {"country": "DE"},
               "lines": [{"sku": "SKU-K", "quantity": 1 + i % 3, "unit_price_minor": 500}]})
    };
    let mut first = Vec::new();
    for chunk in (0..500).collect::<Vec<usize>>().chunks(50) {
        let answers = futures::future::join_all(chunk.iter().map(|i| {
            let key = format!("key-{i}");
            let body = if i % 5 == 4 {
                json!({"warehouse": "BER-1", "delta": 3, "reason": "received"})
            } else {
                order_body(*i)
            };
            let path = if i % 5 == 4 { format!("/inventory/SKU-{i}/adjustments") } else { "/orders".to_string() };
            async move {
                let (status, answer) = checkout.post(&path, &body, Some(&key)).await;
                (path, body, key, status, answer)
            }
        }))
        .await;
        first.extend(answers);
    }
    assert!(first.iter().all(|(_, _, _, status, _)| *status == 202));
    let orders_end = common::log_ends(&kafka, &topic).await;
    let adjustments = schemas::adjustments_topic(&topic);
    let adjustments_end = common::log_ends(&kafka, &adjustments).await;

    let pool = sqlx::AnyPool::connect(&checkout.database_url).await.expect("pool");
    let owners: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM checkout_orders").fetch_one(&pool).await.expect("n");
    let keys = sqlx::query("SELECT idempotency_key FROM checkout_keys").fetch_all(&pool).await.expect("keys");
    assert_eq!(keys.len(), 500);
    assert!(
        keys.iter().all(|r| !r.try_get::<String, _>("idempotency_key").expect("key").starts_with("key-")),
        "keys are stored as digests"
    );
    sqlx::query("DELETE FROM checkout_keys").execute(&pool).await.expect("lose the keys");
    sqlx::query("DELETE FROM checkout_orders").execute(&pool).await.expect("lose the owners");

    let brokers = std::env::var("ORDERFLOW_BROKERS").expect("brokers");
    let out = common::run_orderflow_with(
        &["rebuild", "checkout-keys", "--json"],
        &[
            ("ORDERFLOW_BROKERS", brokers.as_str()),
            ("ORDERFLOW_DATABASE_URL", checkout.database_url.as_str()),
            ("ORDERFLOW_TOPIC", topic.as_str()),
        ],
    );
    let report: Value =
        serde_json::from_str(out.lines().find(|l| l.contains("restored")).expect("report")).expect("json");
    assert_eq!((report["keys_written"].as_i64(), report["owners_written"].as_i64()), (Some(500), Some(owners)));

    for chunk in first.chunks(50) {
        let again = futures::future::join_all(
            chunk.iter().map(|(path, body, key, _, _)| async move { checkout.post(path, body, Some(key)).await }),
        )
        .await;
        for ((path, _, key, _, answer), (status, replayed)) in chunk.iter().zip(again) {
            assert_eq!((status, &replayed), (202, answer), "{path} under {key}");
        }
    }
    assert_eq!(common::log_ends(&kafka, &topic).await, orders_end, "the retries appended nothing");
    assert_eq!(common::log_ends(&kafka, &adjustments).await, adjustments_end);
    // Another body under a restored key is still refused, and owners are back: only the
    // placing principal may cancel.
    let (status, answer) = checkout.post("/orders", &order_body(999), Some("key-0")).await;
    assert_eq!((status, &answer["error"]), (422, &json!("idempotency_key_reused")), "{answer}");
    let owner_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM checkout_orders").fetch_one(&pool).await.expect("n");
    assert_eq!(owner_rows, owners);
}
