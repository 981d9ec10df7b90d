//! orderflow against a real Confluent-compatible registry (Apicurio Registry 3.x, started by
//! `infra/local/up --schema-registry`), and a payment service written with Python's
//! confluent-kafka and its stock Avro serializer publishing straight to the topic:
//! - `schemas register|check`: the contract registers under the FULL rule, registering
//!   again finds the same ids, and a schema that breaks compatibility is refused by the
//!   registry and reported by `schemas check`;
//! - the service's events (v1, then a v2 with an added optional field) are applied by
//!   consumers that are never restarted, exactly like the checkout's; with the registry
//!   stopped the consumers stall, say so and lose nothing, then go on; a stock
//!   deserializer reads every record of the log.
use crate::common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use infra::schema_registry::{Contract, RegistryClient, RegistryError};
use projections::store::Store;
use projections::ProjectionKind;
use serde_json::{json, Value};

/// Tests that need the registry answering hold this shared; the one that stops it holds
/// it alone.
fn registry_lock() -> &'static tokio::sync::RwLock<()> {
    static LOCK: OnceLock<tokio::sync::RwLock<()>> = OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::RwLock::new(()))
}

/// The registry's URL, starting it (once per test binary) if it does not run yet.
fn registry_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(start_registry)
}

/// Starts the registry if it does not run (`infra/local/up` starts only what is missing);
/// returns its URL.
fn start_registry() -> String {
    let up = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/local/up");
    let output = std::process::Command::new(up).arg("--schema-registry").output().expect("run infra/local/up");
    assert!(output.status.success(), "infra/local/up --schema-registry: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("export ORDERFLOW_SCHEMA_REGISTRY_URL="))
        .expect("the registry's URL is exported")
        .to_string()
}

/// Stops the registry `infra/local/up` started (SIGTERM) and waits until it is gone.
fn stop_registry() {
    let state = std::env::var("ORDERFLOW_LOCAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".local"));
    let pid = std::fs::read_to_string(state.join("registry.pid")).expect("the registry's pid file");
    let pid = pid.trim();
    assert!(std::process::Command::new("kill").arg(pid).status().expect("kill").success(), "kill {pid}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(std::time::Instant::now() < deadline, "the registry (pid {pid}) did not stop within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tests/clients/payment_service.py <args>` with the stock Python clients; its last line
/// of output, as JSON.
fn python(args: &[&str]) -> Value {
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    // Bounded: a client waiting on a registry that never answers must fail the test, not hang it.
    let output = std::process::Command::new("timeout")
        .arg("300")
        .arg(clients.join("python"))
        .arg(clients.join("payment_service.py"))
        .args(args)
        .output()
        .expect("run the Python client");
    assert!(
        output.status.success(),
        "payment_service.py {args:?}: {}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("payment_service.py {args:?} printed {stdout:?}: {e}"))
}

/// The Python service publishes one `PaymentCaptured` per order with the schema in
/// `schema` (plus `extra` fields); with `out`, it only serializes them into that file.
fn publish_payments(topic: &str, schema: &str, orders: &[uuid::Uuid], extra: Value, out: Option<&Path>) -> Value {
    let brokers = common::kafka().brokers;
    let payments = payments_json(orders, extra);
    let mut args = vec!["publish", "--brokers", &brokers, "--registry", registry_url(), "--topic", topic];
    args.extend(["--schema", schema, "--payments", &payments]);
    let out = out.map(|p| p.to_str().expect("utf-8").to_string());
    if let Some(out) = &out {
        args.extend(["--out", out]);
    }
    python(&args)
}

fn client_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(name).to_str().expect("utf-8").to_string()
}

fn schemas(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["schemas"])
        .args(args)
        .env("ORDERFLOW_SCHEMA_REGISTRY_URL", registry_url())
        .env("RUST_LOG", "error")
        .output()
        .expect("run orderflow schemas")
}

/// A copy of the contract with `v2` added as version 2 of OrderCancelled.
fn contract_with_order_cancelled_v2(v2: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let dir = std::env::temp_dir().join(format!("orderflow-contract-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for entry in std::fs::read_dir(root.join("avro")).expect("avro dir") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
    }
    std::fs::copy(root.join("tests/fixtures").join(v2), dir.join("order_cancelled.v2.avsc")).expect("copy v2");
    let mut manifest: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("manifest")).expect("json");
    manifest.push(serde_json::json!({"subject": "com.orderflow.events.OrderCancelled", "version": 2, "id": 99,
        "file": "order_cancelled.v2.avsc"}));
    std::fs::write(dir.join("manifest.json"), serde_json::to_string_pretty(&manifest).expect("json")).expect("write");
    dir
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_registers_once_under_the_full_rule_and_an_incompatible_schema_is_refused_and_reported() {
    common::init_logs();
    let _registry = registry_lock().read().await;
    let first = schemas(&["register"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let again = schemas(&["register"]);
    assert_eq!(stdout(&again), stdout(&first), "registering again finds the same ids");
    assert_eq!(stdout(&first).lines().count(), schemas::EventKind::ALL.len(), "one line per schema");

    let checked = schemas(&["check"]);
    assert!(checked.status.success(), "{}{}", stdout(&checked), String::from_utf8_lossy(&checked.stderr));
    assert!(stdout(&checked).lines().all(|l| l.contains("compatible with the registry")), "{}", stdout(&checked));

    // A required field without a default: old records cannot be read. The registry
    // refuses to register it, and `schemas check` says so (as the gate does for the files).
    let client = RegistryClient::new(registry_url(), Duration::from_secs(10)).expect("client");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/tests/fixtures");
    let incompatible = std::fs::read_to_string(root.join("order_cancelled.v2.incompatible.avsc")).expect("fixture");
    let refused = client.register("com.orderflow.events.OrderCancelled", &incompatible).await;
    assert!(matches!(refused, Err(RegistryError::Refused { status: 409, .. })), "{refused:?}");
    let dir = contract_with_order_cancelled_v2("order_cancelled.v2.incompatible.avsc");
    let checked = schemas(&["check", "--dir", dir.to_str().expect("utf-8")]);
    assert!(!checked.status.success(), "an incompatible schema must fail the check: {}", stdout(&checked));
    assert!(
        stdout(&checked).contains("OrderCancelled v2 (order_cancelled.v2.avsc): INCOMPATIBLE with the registry"),
        "{}",
        stdout(&checked)
    );

    // An added optional field is compatible both ways: checked, then registered as v2.
    let dir = contract_with_order_cancelled_v2("order_cancelled.v2.compatible.avsc");
    let dir = dir.to_str().expect("utf-8");
    let checked = schemas(&["check", "--dir", dir]);
    assert!(checked.status.success(), "{}", stdout(&checked));
    let registered = schemas(&["register", "--dir", dir]);
    assert!(registered.status.success(), "{}", String::from_utf8_lossy(&registered.stderr));
    assert!(
        stdout(&registered).contains("OrderCancelled v2 (order_cancelled.v2.avsc) → id"),
        "{}",
        stdout(&registered)
    );
}

#[test]
fn a_registry_that_does_not_answer_is_a_transient_error_naming_it() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = RegistryClient::new("http://127.0.0.1:1", Duration::from_secs(2)).expect("client");
    let err = runtime.block_on(client.schema(1)).expect_err("nothing listens there");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("http://127.0.0.1:1"), "{err}");
    assert!(matches!(RegistryClient::new("ftp://x", Duration::from_secs(1)), Err(RegistryError::BadUrl(_))));
}

/// One shop wired to the registry: a checkout framing with the registry's ids, the payment
/// projection and both processes reading with them, all in this process and never
/// restarted during the test.
struct Shop {
    topic: String,
    checkout: common::TestCheckout,
    store: Store,
    payments: consumers::MemberHandle,
    processes: common::Processes,
}

impl Shop {
    async fn open(contract: &Contract) -> Shop {
        let kafka = common::kafka();
        let topic = common::fresh_topic("direct", 3).await;
        let access = common::test_access();
        let checkout = common::TestCheckout::spawn_with_codec(
            &kafka,
            &topic,
            Duration::from_secs(5),
            access,
            contract.codec().clone(),
        )
        .await;
        let database_url = common::fresh_database().await;
        let prefix = common::fresh_group_prefix();
        let store = Store::connect(&database_url).await.expect("store").with_group_prefix(&prefix).expect("prefix");
        let group = store.group(ProjectionKind::Payment);
        let mut config = common::member_config(ProjectionKind::Payment, &topic, &group);
        config.contract = contract.clone();
        // The registry is away for longer than the tests' usual 10 s.
        config.max_poll_interval = Duration::from_secs(120);
        let payments = consumers::member::run_member(config, &kafka, store.clone()).expect("payment member");
        let processes = common::Processes::start_with(&store, &topic, Duration::from_secs(900), contract);
        Shop { topic, checkout, store, payments, processes }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.checkout.post(path, &body, None).await;
        assert_eq!(status, 202, "{path}: {answer}");
        answer
    }

    async fn place(&self) -> uuid::Uuid {
        let body = json!({"customer_id": "c-1", "currency": "EUR", "ship_to": {"country": "DE"},
            "lines": [{"sku": "SKU-R", "quantity": 1, "unit_price_minor": 1000}]});
        self.post("/orders", body).await["order_id"].as_str().expect("order_id").parse().expect("uuid")
    }

    async fn capture_through_checkout(&self, order: uuid::Uuid) {
        let body = json!({"status": "captured", "amount_minor": 1000, "provider_ref": "checkout"});
        self.post(&format!("/orders/{order}/payments"), body).await;
    }

    fn payment_group(&self) -> (String, String) {
        (self.store.group(ProjectionKind::Payment), self.topic.clone())
    }

    async fn settle(&self) {
        self.processes.settle(&self.store, &[self.payment_group()]).await;
    }

    /// (status, captured) of an order in the payment projection.
    async fn payment(&self, order: uuid::Uuid) -> (String, i64) {
        let snapshot = self.store.reads().snapshot().await.expect("snapshot");
        let row = snapshot.payments.iter().find(|p| p.order_id == order).expect("the order has a payment row");
        (format!("{:?}", row.status), row.captured_minor)
    }

    async fn dead_letters(&self) -> usize {
        self.store.reads().dead_letters(&self.payment_group().0).await.expect("dead letters").len()
    }
}

fn payments_json(orders: &[uuid::Uuid], extra: Value) -> String {
    let entries: Vec<Value> = orders
        .iter()
        .map(|o| {
            let mut entry = json!({"order_id": o.to_string(), "amount_minor": 1000, "provider_ref": "psp-7"});
            if let (Some(entry), Some(extra)) = (entry.as_object_mut(), extra.as_object()) {
                entry.extend(extra.clone());
            }
            entry
        })
        .collect();
    Value::Array(entries).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_publishing_with_the_stock_serializer_is_applied_through_versions_and_a_registry_outage() {
    common::init_logs();
    let _registry = registry_lock().write().await;
    let url = registry_url().to_string();
    let brokers = common::kafka().brokers;
    let registered = schemas(&["register"]);
    assert!(registered.status.success(), "{}", String::from_utf8_lossy(&registered.stderr));
    let contract =
        Contract::connect(RegistryClient::new(&url, Duration::from_secs(2)).expect("client")).await.expect("contract");
    let shop = Shop::open(&contract).await;
    shop.post("/inventory/SKU-R/adjustments", json!({"warehouse": "BER-1", "delta": 100, "reason": "received"})).await;
    // Stocked before any order is placed (the two travel on different partitions).
    shop.settle().await;
    let orders: Vec<uuid::Uuid> = futures_orders(&shop, 5).await;
    let [by_checkout, by_v1, by_v2_in_outage, in_outage, by_v2] = orders[..] else { unreachable!() };

    // The checkout's capture and the service's, written with the service's own copy of v1.
    shop.capture_through_checkout(by_checkout).await;
    let v1 = client_file("../../schemas/avro/payment_captured.v1.avsc");
    let published = publish_payments(&shop.topic, &v1, &[by_v1], json!({}), None);
    assert_eq!(
        published["schema_id"],
        json!(contract.codec().schema_id(schemas::EventKind::PaymentCaptured)),
        "the service's v1 is the checkout's: one id"
    );
    shop.settle().await;
    assert_eq!(shop.payment(by_v1).await, shop.payment(by_checkout).await, "applied exactly like the checkout's");
    assert_eq!(shop.payment(by_v1).await, ("Captured".to_string(), 1000));

    // The service moves to v2 (an added optional field): the registry takes it as a new
    // version under FULL. Its first records are serialized now and reach the topic only
    // once the registry is stopped, so the consumers meet an id they never saw while no
    // registry answers.
    let v2 = client_file("payment_captured.v2.avsc");
    let out = std::env::temp_dir().join(format!("orderflow-v2-{}.json", uuid::Uuid::new_v4().simple()));
    let serialized = publish_payments(&shop.topic, &v2, &[by_v2_in_outage], json!({"processor": "acme"}), Some(&out));
    let v2_id = serialized["schema_id"].as_u64().expect("v2 id") as u32;
    assert!(!contract.codec().knows(v2_id), "v2 is new to the consumers");
    stop_registry();

    let records: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&out).expect("serialized")).expect("json");
    let producer: rdkafka::producer::FutureProducer =
        common::kafka().client_config().set("enable.idempotence", "true").create().expect("producer");
    for record in &records {
        let key = record["key"].as_str().expect("key");
        let value =
            base64::engine::general_purpose::STANDARD.decode(record["value"].as_str().expect("value")).expect("base64");
        producer
            .send(rdkafka::producer::FutureRecord::to(&shop.topic).key(key).payload(&value), Duration::from_secs(10))
            .await
            .expect("produced");
    }
    // The checkout needs no registry for its own ids: it goes on taking payments.
    shop.capture_through_checkout(in_outage).await;

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !shop.payments.stats.registry_stalled.load(std::sync::atomic::Ordering::Relaxed) {
        assert!(std::time::Instant::now() < deadline, "the payment member never reported waiting for the registry");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shop.payment(by_v2_in_outage).await.0, "Pending", "stalled, not applied");
    assert_eq!(shop.dead_letters().await, 0, "an unreachable registry parks nothing");

    start_registry();
    shop.settle().await;
    assert!(!shop.payments.stats.registry_stalled.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(shop.payment(by_v2_in_outage).await, ("Captured".to_string(), 1000), "v2 applied after the outage");
    assert_eq!(shop.payment(in_outage).await, ("Captured".to_string(), 1000), "nothing accepted meanwhile is lost");
    assert!(contract.codec().knows(v2_id), "the consumers learned v2 from the registry");

    // v2 published straight to the topic, the registry answering: applied the same way.
    let published = publish_payments(&shop.topic, &v2, &[by_v2], json!({"processor": "acme"}), None);
    assert_eq!(published["schema_id"], json!(v2_id));
    shop.settle().await;
    assert_eq!(shop.payment(by_v2).await, shop.payment(by_checkout).await);
    assert_eq!(shop.dead_letters().await, 0);
    for order in [by_checkout, by_v1, by_v2_in_outage, in_outage, by_v2] {
        let status = shop.store.reads().order_status(order).await.expect("status").expect("decided").status;
        assert_eq!(status, projections::process::order::OrderStatus::Paid, "{order}");
    }

    // A schema that breaks v1's readers is refused by the registry, whatever client asks.
    let refused =
        python(&["register", "--registry", &url, "--schema", &client_file("payment_captured.incompatible.avsc")]);
    assert_eq!(refused["refused"], json!(409), "{refused}");

    // A stock deserializer reads every record of every topic: the checkout's, the
    // processes' (through the relay), the service's.
    let topics = schemas::pipeline_topics(&shop.topic);
    let mut total: i64 = 0;
    for topic in &topics {
        total += common::log_ends(&common::kafka(), topic).await.values().sum::<i64>();
    }
    let read = python(&[
        "read",
        "--brokers",
        &brokers,
        "--registry",
        &url,
        "--topics",
        &topics.join(","),
        "--expect",
        &total.to_string(),
    ]);
    assert_eq!(read["read"], json!(total), "{read}");
    assert_eq!(read["errors"], json!([]), "{read}");
    for kind in ["OrderPlaced", "PaymentCaptured", "StockAdjusted", "StockRequested", "StockDecided", "OrderConfirmed"]
    {
        assert!(read["by_schema"][kind].as_u64().unwrap_or(0) > 0, "no {kind} read: {read}");
    }
    let _ = std::fs::remove_file(out);
    shop.payments.stop().await.expect("payment member stops");
    shop.processes.stop().await;
}

async fn futures_orders(shop: &Shop, n: usize) -> Vec<uuid::Uuid> {
    let mut orders = Vec::with_capacity(n);
    for _ in 0..n {
        orders.push(shop.place().await);
    }
    orders
}
