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

    // Every process table, and what the database held of the process groups' reading.
    for table in ["process_orders", "stock_levels", "stock_holds"] {
        sqlx::query(&format!("DELETE FROM {table}")).execute(&pool).await.expect("delete");
    }
    for process in [projections::registry::ProcessKind::OrderProcess, projections::registry::ProcessKind::Stock] {
        for table in ["consumer_offsets", "processed_events"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE group_id = $1"))
                .bind(shop.store.group(process))
                .execute(&pool)
                .await
                .expect("delete");
        }
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
    let args = ["rebuild", "stock", "--json", "--stopped-within", "2s"];
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

/// The pipeline's services as child processes on one database, as an operator runs them.
struct Site {
    env: Vec<(&'static str, String)>,
    port: u16,
    checkout: Option<common::Child>,
    consumers: Vec<common::Child>,
}

const ALL_GROUPS: [&str; 6] = ["inventory", "payment", "fulfilment", "history", "order-process", "stock"];

impl Site {
    fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    fn start_checkout(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let tokens = common::tokens_file();
        let args = ["checkout", "--listen", &listen, "--publish-timeout", "2s", "--auth-tokens", &tokens];
        self.checkout = Some(common::Child::spawn(&args, &self.env()));
    }

    fn start_consumers(&mut self) {
        for group in ALL_GROUPS {
            let child = common::Child::spawn(&["consume", group], &self.env());
            self.consumers.push(child);
        }
    }

    /// Everything SIGKILLed at once, as when the database's host is lost with the
    /// services' connections.
    fn kill_all(&mut self) {
        self.checkout.take();
        self.consumers.clear();
    }

    /// One step of the README's runbook.
    fn run(&self, args: &[&str]) -> String {
        common::run_orderflow_with(args, &self.env())
    }
}

/// Sends `path` with `body` under `key` until the checkout answers anything but a
/// transient failure (503, 409, no connection), as the API tells clients to.
async fn until_answered(client: &reqwest::Client, url: &str, body: &Value, key: &str) -> (u16, Value) {
    loop {
        match orderflow::load::post_json(client, url, body, Some(key)).await {
            Ok((status, answer)) if status != 503 && status != 409 => return (status, answer),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_database_lost_while_orders_flow_comes_back_from_the_log_by_the_runbook_exactly() {
    const ORDERS: usize = 400;
    const SKUS: usize = 5;
    const UNITS: i64 = 60;
    let kafka = common::kafka();
    let topic = common::fresh_topic("drill", 4).await;
    let database_url = common::fresh_database().await;
    let database = database_url.rsplit('/').next().expect("name").to_string();
    let admin_url = std::env::var("ORDERFLOW_DATABASE_URL").expect("admin url");
    let port = common::free_port();
    let mut site = Site {
        env: vec![
            ("ORDERFLOW_BROKERS", kafka.brokers.clone()),
            ("ORDERFLOW_DATABASE_URL", database_url.clone()),
            ("ORDERFLOW_TOPIC", topic.clone()),
            ("ORDERFLOW_GROUP_PREFIX", common::fresh_group_prefix()),
            ("ORDERFLOW_PAYMENT_TIMEOUT", "15m".into()),
        ],
        port,
        checkout: None,
        consumers: Vec::new(),
    };
    site.run(&["migrate"]);
    site.start_checkout();
    site.start_consumers();
    let base = format!("http://127.0.0.1:{port}");
    let client = orderflow::load::http_client_with(Some(&common::token(common::ALL_SCOPES)));
    for s in 0..SKUS {
        let body = json!({"warehouse": "BER-1", "delta": UNITS, "reason": "received"});
        let (status, _) =
            until_answered(&client, &format!("{base}/inventory/SKU-{s}/adjustments"), &body, &format!("stock-{s}"))
                .await;
        assert_eq!(status, 202);
    }

    // Clients place orders and pay every third one, each request under its key until it
    // is answered, while the database is lost and recovered.
    let load = tokio::spawn({
        let (client, base) = (client.clone(), base.clone());
        async move {
            let mut answers = BTreeMap::new();
            for chunk in (0..ORDERS).collect::<Vec<_>>().chunks(4) {
                let placed = futures::future::join_all(chunk.iter().map(|i| {
                    let body = json!({"customer_id": format!("c-{i}"), "currency": "EUR", "ship_to": {"country": "DE"},
                        "lines": [{"sku": format!("SKU-{}", i % SKUS), "quantity": 1, "unit_price_minor": 700}]});
                    let (client, url, key) = (&client, format!("{base}/orders"), format!("order-{i}"));
                    async move { (*i, until_answered(client, &url, &body, &key).await) }
                }))
                .await;
                for (i, (status, answer)) in placed {
                    assert_eq!(status, 202, "order {i}: {answer}");
                    let order = answer["order_id"].as_str().expect("order id").to_string();
                    if i % 3 == 0 {
                        let body = json!({"status": "captured", "amount_minor": 700, "provider_ref": format!("p-{i}")});
                        let url = format!("{base}/orders/{order}/payments");
                        let (status, paid) = until_answered(&client, &url, &body, &format!("pay-{i}")).await;
                        assert_eq!(status, 202, "payment {i}: {paid}");
                    }
                    answers.insert(i, order);
                }
                tokio::time::sleep(Duration::from_millis(120)).await;
            }
            answers
        }
    });

    // The audit trail is backed up as the README says (an audited action in it first).
    site.run(&["rebuild", "history", "--drop-old", "--no-rebuild"]);
    let backup = std::env::temp_dir().join(format!("orderflow-audit-{database}.sql"));
    let pg_bin = std::env::var("ORDERFLOW_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let dumped = std::process::Command::new(format!("{pg_bin}/pg_dump"))
        .args(["--data-only", "--table", "operator_actions", "--table", "offset_resets", &database_url])
        .output()
        .expect("pg_dump");
    assert!(dumped.status.success(), "pg_dump: {}", String::from_utf8_lossy(&dumped.stderr));
    std::fs::write(&backup, &dumped.stdout).expect("backup written");

    // Lost: the services die with it; the server is re-initialised with an empty database.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!load.is_finished(), "the load ended before the loss");
    site.kill_all();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url).await.expect("admin");
    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)")).execute(&mut admin).await.expect("drop");
    sqlx::query(&format!("CREATE DATABASE {database}")).execute(&mut admin).await.expect("create");

    // The README's runbook, step by step.
    let recovery = std::time::Instant::now();
    site.run(&["migrate"]);
    let restored = std::process::Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-f", &backup.display().to_string(), &database_url])
        .output()
        .expect("psql");
    assert!(restored.status.success(), "restoring the audit trail: {}", String::from_utf8_lossy(&restored.stderr));
    site.run(&["rebuild", "checkout-keys", "--json"]);
    site.start_checkout();
    let stock = site.run(&["rebuild", "stock", "--json"]);
    let process = site.run(&["rebuild", "order-process", "--json"]);
    site.start_consumers();
    let answers = load.await.expect("load");
    let store = projections::store::Store::connect(&database_url).await.expect("store");
    let store = store.with_group_prefix(&site.env[3].1).expect("prefix");
    let groups: Vec<(String, String)> = ALL_GROUPS
        .iter()
        .flat_map(|g| {
            let kind: projections::registry::GroupKind = g.parse().expect("group");
            orderflow::kit::reading(kind, &store.group(kind), &topic)
        })
        .collect();
    let reached =
        orderflow::kit::wait_settled(&store, &kafka, &groups, Duration::from_secs(120)).await.expect("settle");
    assert!(reached.values().all(|r| *r), "not settled: {reached:?}");
    eprintln!(
        "recovered in {:.1} s (runbook and catching up, {ORDERS} orders); stock: {stock}; order process: {process}",
        recovery.elapsed().as_secs_f64()
    );

    // No retried request published twice: one OrderPlaced id per key's order, and the
    // log's orders are exactly the answered ones.
    let log = decoded_log(&kafka, &topic).await;
    let placed = crate::order_process::decisions_per_order(&log, schemas::EventKind::OrderPlaced);
    let answered: std::collections::BTreeSet<uuid::Uuid> = answers.values().map(|o| o.parse().expect("uuid")).collect();
    assert_eq!(placed.keys().copied().collect::<std::collections::BTreeSet<_>>(), answered);
    assert!(placed.values().all(|n| *n == 1), "an order placed twice");
    let captured = crate::order_process::decisions_per_order(&log, schemas::EventKind::PaymentCaptured);
    assert_eq!(captured.len(), ORDERS.div_ceil(3));
    assert!(captured.values().all(|n| *n == 1), "a payment captured twice");

    // No order decided twice, every order decided, and its status is what its decisions say.
    let decisions = decoded_log(&kafka, &schemas::decisions_topic(&topic)).await;
    let confirmed = crate::order_process::decisions_per_order(&decisions, schemas::EventKind::OrderConfirmed);
    let rejected = crate::order_process::decisions_per_order(&decisions, schemas::EventKind::OrderRejected);
    let mut per_sku = BTreeMap::new();
    for (i, order) in &answers {
        let id: uuid::Uuid = order.parse().expect("uuid");
        let decided = confirmed.get(&id).copied().unwrap_or(0) + rejected.get(&id).copied().unwrap_or(0);
        assert_eq!(decided, 1, "order {i} decided {decided} times");
        let status = store.reads().order_status(id).await.expect("status").expect("known").status;
        let want = match (confirmed.contains_key(&id), i % 3 == 0) {
            (true, true) => OrderStatus::Paid,
            (true, false) => OrderStatus::Confirmed,
            (false, _) => OrderStatus::Rejected,
        };
        assert_eq!(status, want, "order {i}");
        if confirmed.contains_key(&id) {
            *per_sku.entry(format!("SKU-{}", i % SKUS)).or_insert(0i64) += 1;
        }
    }
    // Every SKU's level is its reservations, never oversold, in the process and the view.
    let levels = store.reads().inventory_levels().await.expect("levels");
    for s in 0..SKUS {
        let sku = format!("SKU-{s}");
        let reserved = per_sku.get(&sku).copied().unwrap_or(0);
        let level = levels.iter().find(|l| l.sku == sku).expect("level");
        assert_eq!((level.on_hand, level.reserved), (UNITS, reserved), "{sku}");
        let row = sqlx::query("SELECT on_hand, reserved FROM stock_levels WHERE sku = $1")
            .bind(&sku)
            .fetch_one(store.pool())
            .await
            .expect("stock row");
        assert_eq!((row.get::<i64, _>("on_hand"), row.get::<i64, _>("reserved")), (UNITS, reserved), "{sku}");
    }
    // The audit trail holds the action from before the loss and the runbook's rebuilds.
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM operator_actions ORDER BY id")
        .fetch_all(store.pool())
        .await
        .expect("audit");
    assert_eq!(actions.first().map(String::as_str), Some("rebuild --no-rebuild"), "{actions:?}");
    assert_eq!(actions.iter().filter(|a| *a == "rebuild").count(), 3, "{actions:?}");
    // Every view equals the one a calm reader builds from the same log.
    let calm = common::calm_rebuild(&kafka, &topic).await;
    let want = calm.reads().snapshot().await.expect("calm");
    common::assert_same_projection(&store.reads().snapshot().await.expect("recovered"), &want, "after the drill");
    site.kill_all();
}
