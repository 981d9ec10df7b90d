//! The order process and the stock group against Apache Kafka and PostgreSQL: stock is
//! never oversold however many orders race for it, unpaid orders expire once and give
//! their stock back, a rejected line releases the order's other lines, and members and
//! the relay killed at every point of a batch still leave every decision taken exactly once.
use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consumers::member::run_member;
use consumers::MemberHandle;
use projections::process::order::OrderStatus;
use projections::registry::ProcessKind;
use projections::store::Store;
use projections::ProjectionKind;
use schemas::{Event, EventKind};
use serde_json::{json, Value};

/// A checkout, a database, the two process groups and an inventory member on a fresh topic.
pub(crate) struct Shop {
    pub(crate) kafka: infra::KafkaSettings,
    pub(crate) topic: String,
    pub(crate) checkout: common::TestCheckout,
    pub(crate) store: Store,
    pub(crate) database_url: String,
    pub(crate) prefix: String,
    pub(crate) processes: Option<common::Processes>,
    pub(crate) inventory: Option<MemberHandle>,
    pub(crate) payment_timeout: Duration,
}

impl Shop {
    pub(crate) async fn open(partitions: i32, payment_timeout: Duration) -> Shop {
        Self::open_with(partitions, payment_timeout, true).await
    }

    /// A shop whose processes run elsewhere (`decide` false): only the checkout and the
    /// inventory member here.
    pub(crate) async fn open_with(partitions: i32, payment_timeout: Duration, decide: bool) -> Shop {
        let kafka = common::kafka();
        let topic = common::fresh_topic("shop", partitions).await;
        let checkout = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await;
        let database_url = common::fresh_database().await;
        let prefix = common::fresh_group_prefix();
        let store = Store::connect(&database_url).await.expect("store").with_group_prefix(&prefix).expect("prefix");
        let inventory_group = store.group(ProjectionKind::Inventory);
        let config = common::member_config(ProjectionKind::Inventory, &topic, &inventory_group);
        let inventory = Some(run_member(config, &kafka, store.clone()).expect("inventory member"));
        let processes = decide.then(|| common::Processes::start(&store, &topic, payment_timeout));
        Shop { kafka, topic, checkout, store, database_url, prefix, processes, inventory, payment_timeout }
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.checkout.post(path, &body, None).await;
        assert_eq!(status, 202, "{path}: {answer}");
        answer
    }

    pub(crate) async fn stock(&self, sku: &str, delta: i64) {
        self.post(
            &format!("/inventory/{sku}/adjustments"),
            json!({"warehouse": "BER-1", "delta": delta, "reason": "received"}),
        )
        .await;
    }

    pub(crate) async fn place(&self, lines: &[(&str, i64)]) -> uuid::Uuid {
        let lines: Vec<Value> =
            lines.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q, "unit_price_minor": 1000})).collect();
        let answer = self
            .post(
                "/orders",
                json!({"customer_id": "c-1", "currency": "EUR", "lines": lines, "ship_to": {"country": "DE"}}),
            )
            .await;
        answer["order_id"].as_str().expect("order_id").parse().expect("uuid")
    }

    pub(crate) async fn capture(&self, order: uuid::Uuid) {
        let body = json!({"status": "captured", "amount_minor": 1000, "provider_ref": "p"});
        self.post(&format!("/orders/{order}/payments"), body).await;
    }

    pub(crate) fn inventory_group(&self) -> (String, String) {
        (self.store.group(ProjectionKind::Inventory), schemas::decisions_topic(&self.topic))
    }

    pub(crate) async fn settle(&self) {
        self.processes.as_ref().expect("processes run").settle(&self.store, &[self.inventory_group()]).await;
    }

    pub(crate) async fn status(&self, order: uuid::Uuid) -> OrderStatus {
        self.store.reads().order_status(order).await.expect("status").map(|s| s.status).unwrap_or(OrderStatus::Pending)
    }

    pub(crate) async fn statuses(&self, orders: &[uuid::Uuid]) -> BTreeMap<OrderStatus, usize> {
        let mut counts = BTreeMap::new();
        for order in orders {
            *counts.entry(self.status(*order).await).or_insert(0) += 1;
        }
        counts
    }

    pub(crate) async fn level(&self, sku: &str) -> (i64, i64, i64) {
        let levels = self.store.reads().inventory_levels().await.expect("levels");
        let level = levels.iter().find(|l| l.sku == sku).unwrap_or_else(|| panic!("no level for {sku}: {levels:?}"));
        (level.on_hand, level.reserved, level.available)
    }

    pub(crate) async fn close(mut self) {
        if let Some(processes) = self.processes.take() {
            processes.stop().await;
        }
        if let Some(inventory) = self.inventory.take() {
            inventory.stop().await.expect("inventory stops");
        }
    }
}

/// Every record of `topic`, decoded (the whole log as it is now).
pub(crate) async fn decoded_log(kafka: &infra::KafkaSettings, topic: &str) -> Vec<Event> {
    let total: i64 = common::log_ends(kafka, topic).await.values().sum();
    let codec = schemas::Codec::builtin();
    let (kafka, topic) = (kafka.clone(), topic.to_string());
    let records =
        tokio::task::spawn_blocking(move || common::read_topic(&kafka, &topic, total as usize)).await.expect("reader");
    records.iter().filter_map(|r| codec.decode(&r.payload).ok()).collect()
}

/// Distinct event ids of `kind` per order in `events` (copies of one event count once).
pub(crate) fn decisions_per_order(events: &[Event], kind: EventKind) -> BTreeMap<uuid::Uuid, usize> {
    let mut ids: BTreeMap<uuid::Uuid, std::collections::BTreeSet<uuid::Uuid>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind() == kind) {
        if let Some(order) = e.order_id() {
            ids.entry(order).or_default().insert(e.envelope().event_id);
        }
    }
    ids.into_iter().map(|(order, ids)| (order, ids.len())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_units_serve_exactly_ten_of_forty_racing_orders_and_available_never_goes_below_zero() {
    let shop = Shop::open(3, Duration::from_secs(900)).await;
    shop.stock("SKU-X", 10).await;
    shop.settle().await;
    assert_eq!(shop.level("SKU-X").await, (10, 0, 10));

    // A reader polls the analyst view throughout.
    let done = Arc::new(AtomicBool::new(false));
    let lowest = Arc::new(AtomicI64::new(i64::MAX));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn({
        let (pool, done, lowest, reads) = (shop.store.pool().clone(), done.clone(), lowest.clone(), reads.clone());
        async move {
            while !done.load(Ordering::SeqCst) {
                let available: Option<i64> = sqlx::query_scalar("SELECT MIN(available) FROM inventory_levels")
                    .fetch_one(&pool)
                    .await
                    .expect("read");
                lowest.fetch_min(available.unwrap_or(i64::MAX), Ordering::SeqCst);
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });

    let placed = futures::future::join_all((0..40).map(|_| shop.place(&[("SKU-X", 1)]))).await;
    shop.settle().await;
    let counts = shop.statuses(&placed).await;
    assert_eq!(counts, BTreeMap::from([(OrderStatus::Confirmed, 10), (OrderStatus::Rejected, 30)]));
    for order in &placed {
        let status = shop.store.reads().order_status(*order).await.expect("status").expect("decided");
        if status.status == OrderStatus::Rejected {
            assert!(status.reason.as_deref().is_some_and(|r| r.starts_with("out of stock: SKU-X")), "{status:?}");
        }
    }
    assert_eq!(shop.level("SKU-X").await, (10, 10, 0));

    // Five cancellations give five units to the next orders.
    let mut confirmed = Vec::new();
    for order in &placed {
        if shop.status(*order).await == OrderStatus::Confirmed {
            confirmed.push(*order);
        }
    }
    for order in &confirmed[..5] {
        shop.post(&format!("/orders/{order}/cancel"), json!({"reason": "changed mind"})).await;
    }
    shop.settle().await;
    assert_eq!(shop.level("SKU-X").await, (10, 5, 5));
    let next = futures::future::join_all((0..6).map(|_| shop.place(&[("SKU-X", 1)]))).await;
    shop.settle().await;
    assert_eq!(shop.statuses(&next).await, BTreeMap::from([(OrderStatus::Confirmed, 5), (OrderStatus::Rejected, 1)]));
    assert_eq!(shop.level("SKU-X").await, (10, 10, 0));

    done.store(true, Ordering::SeqCst);
    reader.await.expect("reader");
    assert!(reads.load(Ordering::SeqCst) > 10, "the reader barely ran");
    assert!(lowest.load(Ordering::SeqCst) >= 0, "a reader saw available {}", lowest.load(Ordering::SeqCst));

    // Each order was decided once: one confirmation or rejection event per order.
    let log = decoded_log(&shop.kafka, &schemas::decisions_topic(&shop.topic)).await;
    let confirmations = decisions_per_order(&log, EventKind::OrderConfirmed);
    let rejections = decisions_per_order(&log, EventKind::OrderRejected);
    assert_eq!(confirmations.len(), 15);
    assert_eq!(rejections.len(), 31);
    assert!(confirmations.values().chain(rejections.values()).all(|n| *n == 1));
    assert_eq!(shop.store.reads().outbox_len().await.expect("outbox"), 0);
    shop.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_right_after_its_skus_restock_was_acknowledged_is_never_rejected_for_lack_of_stock() {
    // Six partitions: an order and its SKU's adjustment almost never share one of the
    // orders topic, which is what used to let the order be decided first.
    let shop = Shop::open(6, Duration::from_secs(900)).await;
    let mut placed = Vec::new();
    for n in 0..200 {
        // A fresh shop each time: nothing in stock until the adjustment's 202.
        let sku = format!("SKU-R{n}");
        let adjusted = shop
            .post(
                &format!("/inventory/{sku}/adjustments"),
                json!({"warehouse": "BER-1", "delta": 1, "reason": "received"}),
            )
            .await;
        assert_eq!(adjusted["position"]["topic"], json!(schemas::adjustments_topic(&shop.topic)), "{adjusted}");
        assert!(adjusted.get("after").is_none(), "no orders-topic position names an adjustment: {adjusted}");
        placed.push(shop.place(&[(sku.as_str(), 1)]).await);
    }
    shop.settle().await;
    assert_eq!(shop.statuses(&placed).await, BTreeMap::from([(OrderStatus::Confirmed, 200)]));
    assert_eq!(shop.level("SKU-R199").await, (1, 1, 0));
    shop.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_written_to_the_callers_topic_are_refused_and_recorded_and_the_order_is_decided_on_real_stock() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let shop = Shop::open(2, Duration::from_secs(900)).await;
    // A principal allowed on the orders topic places an order for a SKU nobody stocked,
    // then writes the decisions the stock group and the order process would publish,
    // signed in the header as the stock group.
    let order = uuid::Uuid::new_v4();
    let placed = match schemas::samples::readdressed(schemas::samples::sample(EventKind::OrderPlaced), order) {
        Event::OrderPlaced(mut e) => {
            e.lines = vec![schemas::OrderLine { sku: "SKU-FORGED".into(), quantity: 1, unit_price_minor: 100 }];
            Event::OrderPlaced(e)
        }
        other => panic!("{other:?}"),
    };
    let forged_stock = match schemas::samples::readdressed(schemas::samples::sample(EventKind::StockDecided), order) {
        Event::StockDecided(mut e) => {
            e.sku = "SKU-FORGED".into();
            (e.on_hand, e.reserved, e.quantity, e.version) = (1_000, 1, 1, i64::MAX);
            Event::StockDecided(e)
        }
        other => panic!("{other:?}"),
    };
    let forged_confirmation = schemas::samples::readdressed(schemas::samples::sample(EventKind::OrderConfirmed), order);
    let producer: FutureProducer = shop.kafka.client_config().create().expect("producer");
    let codec = schemas::Codec::builtin();
    for event in [&placed, &forged_stock, &forged_confirmation] {
        let payload = codec.encode(event).expect("encode");
        let headers = OwnedHeaders::new().insert(Header { key: schemas::PRINCIPAL_HEADER, value: Some("stock") });
        let key = event.key();
        let record = FutureRecord::to(&shop.topic).key(&key).payload(&payload).headers(headers);
        producer.send(record, Duration::from_secs(10)).await.expect("the callers' topic takes it");
    }
    shop.settle().await;

    // Decided on the stock there is: none.
    assert_eq!(shop.status(order).await, OrderStatus::Rejected);
    assert_eq!(shop.level("SKU-FORGED").await, (0, 0, 0), "the inventory shows the stock group's own levels");
    // The forged stock decision is recorded, resolved, under no order (it holds nothing back).
    let group = shop.store.group(ProcessKind::OrderProcess);
    let recorded =
        shop.store.reads().list_dead_letters_with(Some(&group), None, false, 100).await.expect("dead letters");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].status, projections::store::DeadLetterStatus::Skipped, "{recorded:?}");
    assert!(
        recorded[0].reason.contains("refused: a StockDecided is trusted only from the Decisions topic"),
        "{recorded:?}"
    );
    assert_eq!(recorded[0].order_id, None);
    // The real decisions are on the decisions topic; the orders topic holds only what the
    // caller wrote.
    let facts = decoded_log(&shop.kafka, &shop.topic).await;
    assert_eq!(facts.len(), 3, "{facts:?}");
    let decisions = decoded_log(&shop.kafka, &schemas::decisions_topic(&shop.topic)).await;
    assert!(decisions.iter().any(|e| matches!(e, Event::OrderRejected(r) if r.order_id == order)), "{decisions:?}");
    shop.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_an_earlier_release_appended_to_the_orders_topic_are_copied_to_the_decisions_topic_on_upgrade() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let kafka = common::kafka();
    let topic = common::fresh_topic("upgrade", 2).await;
    // The earlier release's log: an order, the stock group's decisions (an adjustment's and
    // the order's reservation) and the confirmation, all on the orders topic.
    let order = uuid::Uuid::new_v4();
    let placed = schemas::samples::readdressed(schemas::samples::sample(EventKind::OrderPlaced), order);
    let decided =
        |order_id: Option<uuid::Uuid>, on_hand: i64, reserved: i64, version: i64| match schemas::samples::readdressed(
            schemas::samples::sample(EventKind::StockDecided),
            order,
        ) {
            Event::StockDecided(mut e) => {
                (e.order_id, e.sku, e.on_hand, e.reserved, e.shipped, e.version) =
                    (order_id, "SKU-L".into(), on_hand, reserved, 0, version);
                Event::StockDecided(e)
            }
            other => panic!("{other:?}"),
        };
    let confirmed = schemas::samples::readdressed(schemas::samples::sample(EventKind::OrderConfirmed), order);
    let legacy = [placed, decided(None, 7, 0, 1), decided(Some(order), 7, 1, 2), confirmed];
    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    let codec = schemas::Codec::builtin();
    for event in &legacy {
        let payload = codec.encode(event).expect("encode");
        let key = event.key();
        let by = if event.kind().is_decision() { "stock" } else { "shop" };
        let headers = OwnedHeaders::new().insert(Header { key: schemas::PRINCIPAL_HEADER, value: Some(by) });
        let record = FutureRecord::to(&topic).key(&key).payload(&payload).headers(headers);
        producer.send(record, Duration::from_secs(10)).await.expect("sent");
    }

    let out = common::run_orderflow(&["topics", "copy-decisions", "--topic", &topic]);
    assert!(out.contains("copied 3 decisions of 4 records"), "{out}");
    let copies = decoded_log(&kafka, &schemas::decisions_topic(&topic)).await;
    assert_eq!(copies.iter().map(Event::kind).collect::<Vec<_>>().len(), 3, "{copies:?}");
    let originals: Vec<uuid::Uuid> = legacy[1..].iter().map(|e| e.envelope().event_id).collect();
    let mut ids: Vec<uuid::Uuid> = copies.iter().map(|e| e.envelope().event_id).collect();
    ids.sort();
    let mut want = originals.clone();
    want.sort();
    assert_eq!(ids, want, "the same events, ids unchanged");

    // The inventory, which now reads decisions only from their own topic, sees them.
    let store = Store::connect(&common::fresh_database().await).await.expect("store");
    let group = store.group(ProjectionKind::Inventory);
    let member = run_member(common::member_config(ProjectionKind::Inventory, &topic, &group), &kafka, store.clone())
        .expect("inventory member");
    common::wait_group_caught_up(&store, &kafka, ProjectionKind::Inventory, &group, &topic).await;
    let levels = store.reads().inventory_levels().await.expect("levels");
    let level = levels.iter().find(|l| l.sku == "SKU-L").unwrap_or_else(|| panic!("{levels:?}"));
    assert_eq!((level.on_hand, level.reserved, level.available), (7, 1, 6));
    member.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_orders_expire_after_the_payment_timeout_once_across_a_restart_and_paid_ones_do_not() {
    let mut shop = Shop::open(2, Duration::from_secs(3)).await;
    shop.stock("SKU-T", 100).await;
    // Stock and orders are on different partitions: stocked first, so no order races it.
    shop.settle().await;
    let orders: Vec<uuid::Uuid> = futures::future::join_all((0..6).map(|_| shop.place(&[("SKU-T", 2)]))).await;
    shop.settle().await;
    assert_eq!(shop.statuses(&orders).await, BTreeMap::from([(OrderStatus::Confirmed, 6)]));
    for order in &orders[..3] {
        shop.capture(*order).await;
    }
    shop.settle().await;
    // The members stop with the timers still running and new ones take over.
    shop.processes.take().expect("processes").stop().await;
    shop.processes = Some(common::Processes::start(&shop.store, &shop.topic, shop.payment_timeout));
    let deadline = Instant::now() + Duration::from_secs(30);
    while shop.statuses(&orders[3..]).await.get(&OrderStatus::Expired) != Some(&3) {
        assert!(Instant::now() < deadline, "unpaid orders did not expire: {:?}", shop.statuses(&orders).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shop.settle().await;
    assert_eq!(
        shop.statuses(&orders).await,
        BTreeMap::from([(OrderStatus::Paid, 3), (OrderStatus::Expired, 3)]),
        "paid orders never expire"
    );
    assert_eq!(shop.level("SKU-T").await, (100, 6, 94), "the expired orders' units are back");
    let status = shop.store.reads().order_status(orders[3]).await.expect("status").expect("row");
    assert!(status.reason.as_deref().is_some_and(|r| r.contains("not paid within 3s")), "{status:?}");

    // Well past the timeout, with the members still running: each timer fired once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    shop.settle().await;
    let expiries = decisions_per_order(
        &decoded_log(&shop.kafka, &schemas::decisions_topic(&shop.topic)).await,
        EventKind::OrderExpired,
    );
    assert_eq!(expiries.len(), 3);
    assert!(expiries.values().all(|n| *n == 1), "{expiries:?}");
    shop.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_one_sku_runs_out_is_rejected_and_its_other_lines_units_come_back() {
    let shop = Shop::open(3, Duration::from_secs(900)).await;
    shop.stock("SKU-A", 5).await;
    shop.stock("SKU-B", 1).await;
    shop.stock("SKU-C", 4).await;
    shop.settle().await;
    let order = shop.place(&[("SKU-A", 2), ("SKU-B", 2), ("SKU-C", 1)]).await;
    shop.settle().await;
    let status = shop.store.reads().order_status(order).await.expect("status").expect("decided");
    assert_eq!(status.status, OrderStatus::Rejected);
    assert!(status.reason.as_deref().is_some_and(|r| r.contains("SKU-B (2 requested, 1 available)")), "{status:?}");
    assert_eq!(shop.level("SKU-A").await, (5, 0, 5));
    assert_eq!(shop.level("SKU-B").await, (1, 0, 1));
    assert_eq!(shop.level("SKU-C").await, (4, 0, 4));
    let log = decoded_log(&shop.kafka, &schemas::decisions_topic(&shop.topic)).await;
    let rejected: Vec<&schemas::OrderRejected> =
        log.iter().filter_map(|e| if let Event::OrderRejected(r) = e { Some(r) } else { None }).collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].skus, vec!["SKU-B".to_string()]);

    // Rebuilding the inventory replays the decisions; it decides nothing again.
    let mut shop = shop;
    shop.inventory.take().expect("inventory").stop().await.expect("stop");
    let mut ends_before = Vec::new();
    for topic in schemas::pipeline_topics(&shop.topic) {
        ends_before.push(common::log_ends(&shop.kafka, &topic).await);
    }
    let levels_before = shop.store.reads().inventory_levels().await.expect("levels");
    let database_url = shop.database_url.clone();
    let prefix = shop.prefix.clone();
    let args =
        ["rebuild", "inventory", "--topic", &shop.topic, "--database-url", &database_url, "--group-prefix", &prefix];
    let rebuilt = common::run_orderflow_with(&[&args[..], &["--timeout", "90s", "--json"]].concat(), &[]);
    assert!(rebuilt.contains("switched"), "{rebuilt}");
    shop.settle().await;
    let mut ends_after = Vec::new();
    for topic in schemas::pipeline_topics(&shop.topic) {
        ends_after.push(common::log_ends(&shop.kafka, &topic).await);
    }
    assert_eq!(ends_after, ends_before, "a rebuild appended nothing");
    assert_eq!(shop.store.reads().outbox_len().await.expect("outbox"), 0);
    assert_eq!(shop.store.reads().inventory_levels().await.expect("levels"), levels_before, "the rebuilt inventory");
    shop.close().await;
}

/// The requests of the crash test, in order: stock, then orders of one or two lines; a
/// third of them paid, every fifth cancelled (some after payment). Stock is ample, so the
/// outcome is the same however the requests interleave with the processes.
fn story(order: usize) -> (Vec<(&'static str, i64)>, bool, bool) {
    const SKUS: [&str; 4] = ["SKU-0", "SKU-1", "SKU-2", "SKU-3"];
    let mut lines = vec![(SKUS[order % 4], 1 + (order % 3) as i64)];
    if order % 2 == 0 {
        lines.push((SKUS[(order + 1) % 4], 1));
    }
    (lines, order % 3 == 0, order % 5 == 0)
}

const STORY_ORDERS: usize = 90;

async fn tell_story(shop_post: &Shop, orders: std::ops::Range<usize>, placed: &mut Vec<uuid::Uuid>) {
    for n in orders {
        let (lines, pay, cancel) = story(n);
        let order = shop_post.place(&lines).await;
        if pay {
            shop_post.capture(order).await;
        }
        if cancel {
            shop_post.post(&format!("/orders/{order}/cancel"), json!({"reason": "story"})).await;
        }
        placed.push(order);
    }
}

/// What the crash test compares: each order's status and reason (by its place in the
/// story), and each SKU's levels.
async fn outcome(
    shop: &Shop,
    placed: &[uuid::Uuid],
) -> (Vec<(OrderStatus, Option<String>)>, Vec<(String, i64, i64, i64)>) {
    let mut statuses = Vec::new();
    for order in placed {
        let row = shop.store.reads().order_status(*order).await.expect("status").expect("decided");
        statuses.push((row.status, row.reason));
    }
    let levels = shop.store.reads().inventory_levels().await.expect("levels");
    (statuses, levels.into_iter().map(|l| (l.sku, l.on_hand, l.reserved, l.shipped)).collect())
}

/// Where a process child's log goes: the crash test reads it to see which fault fired.
fn child_log(prefix: &str, process: ProcessKind, fault: Option<&str>) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("orderflow-{prefix}-{process}-{}.log", fault.unwrap_or("calm")))
}

fn spawn_process(
    shop: &Shop,
    prefix: &str,
    database_url: &str,
    process: ProcessKind,
    fault: Option<&str>,
) -> common::Child {
    let mut env = vec![
        ("ORDERFLOW_BROKERS", shop.kafka.brokers.clone()),
        ("ORDERFLOW_DATABASE_URL", database_url.to_string()),
        ("ORDERFLOW_GROUP_PREFIX", prefix.to_string()),
        ("ORDERFLOW_TOPIC", shop.topic.clone()),
    ];
    if let Some(point) = fault {
        env.push(("ORDERFLOW_FAULT_POINT", point.to_string()));
        env.push(("ORDERFLOW_FAULT_ACTION", "crash".to_string()));
        env.push(("ORDERFLOW_FAULT_AFTER_BATCHES", "2".to_string()));
    }
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"));
    command
        .args(["consume", process.name(), "--batch-max", "20", "--session-timeout", "6s", "--max-poll-interval", "10s"])
        .env("RUST_LOG", "warn")
        .env_remove("ORDERFLOW_FAULT_POINT")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(child_log(prefix, process, fault)).expect("log file"));
    for (k, v) in &env {
        command.env(k, v);
    }
    common::Child(command.spawn().expect("spawn orderflow consume"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_members_and_the_relay_killed_at_every_point_of_a_batch_leave_every_decision_taken_once() {
    // The calm run: the story with in-process members that are never disturbed.
    let calm = Shop::open(3, Duration::from_secs(900)).await;
    for sku in ["SKU-0", "SKU-1", "SKU-2", "SKU-3"] {
        calm.stock(sku, 1000).await;
    }
    calm.settle().await;
    let mut calm_orders = Vec::new();
    tell_story(&calm, 0..STORY_ORDERS, &mut calm_orders).await;
    calm.settle().await;
    let want = outcome(&calm, &calm_orders).await;
    assert!(
        want.0.iter().any(|(s, _)| *s == OrderStatus::Paid) && want.0.iter().any(|(s, _)| *s == OrderStatus::Cancelled)
    );

    // The crash run: the same story, told while members of both process groups (child
    // processes, each with a relay) are killed at one fault point after another.
    let shop = Shop::open_with(3, Duration::from_secs(900), false).await;
    let database_url = common::fresh_database().await;
    let prefix = common::fresh_group_prefix();
    let store = Store::connect(&database_url).await.expect("store").with_group_prefix(&prefix).expect("prefix");
    // Decisions are read back from this database; the shop's inventory member projects the log.
    for sku in ["SKU-0", "SKU-1", "SKU-2", "SKU-3"] {
        shop.stock(sku, 1000).await;
    }
    // The shop is stocked before it opens: members without faults take the stock in
    // (and are then killed outright).
    {
        let _order_process = spawn_process(&shop, &prefix, &database_url, ProcessKind::OrderProcess, None);
        let _stock = spawn_process(&shop, &prefix, &database_url, ProcessKind::Stock, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stocked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stock_levels WHERE on_hand = 1000")
                .fetch_one(store.pool())
                .await
                .expect("stock");
            if stocked == 4 {
                break;
            }
            assert!(Instant::now() < deadline, "the stock group did not take the stock in");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let points = [
        "before_transaction",
        "after_projection_write",
        "after_offset_update",
        "after_commit",
        "relay_before_publish",
        "relay_after_publish",
    ];
    let per_phase = STORY_ORDERS / (points.len() + 1);
    let mut placed = Vec::new();
    for (phase, point) in points.iter().enumerate() {
        let mut order_process = spawn_process(&shop, &prefix, &database_url, ProcessKind::OrderProcess, Some(point));
        let mut stock = spawn_process(&shop, &prefix, &database_url, ProcessKind::Stock, Some(point));
        tell_story(&shop, phase * per_phase..(phase + 1) * per_phase, &mut placed).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let crashed = loop {
            let op = order_process.0.try_wait().expect("wait");
            let st = stock.0.try_wait().expect("wait");
            if let Some(status) = op.or(st) {
                break status;
            }
            assert!(Instant::now() < deadline, "{point}: no member crashed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(!crashed.success(), "{point}: a member exited cleanly instead of crashing");
        let logs: String = [ProcessKind::OrderProcess, ProcessKind::Stock]
            .iter()
            .map(|p| std::fs::read_to_string(child_log(&prefix, *p, Some(point))).unwrap_or_default())
            .collect();
        assert!(logs.contains(&format!("fault point {point} hit: crashing")), "{point}: exited otherwise: {logs}");
        // The other one is killed outright (SIGKILL, wherever it was).
        drop(order_process);
        drop(stock);
    }
    let order_process = spawn_process(&shop, &prefix, &database_url, ProcessKind::OrderProcess, None);
    let stock = spawn_process(&shop, &prefix, &database_url, ProcessKind::Stock, None);
    tell_story(&shop, points.len() * per_phase..STORY_ORDERS, &mut placed).await;
    let groups: Vec<(String, String)> = ProcessKind::ALL
        .into_iter()
        .flat_map(|process| orderflow::kit::reading(process, &store.group(process), &shop.topic))
        .collect();
    let reached =
        orderflow::kit::wait_settled(&store, &shop.kafka, &groups, Duration::from_secs(90)).await.expect("settle");
    assert!(reached.values().all(|r| *r), "{reached:?}");
    let inventory = [shop.inventory_group()];
    let reached = orderflow::kit::wait_settled(&shop.store, &shop.kafka, &inventory, Duration::from_secs(30))
        .await
        .expect("settle");
    assert!(reached.values().all(|r| *r), "{reached:?}");
    drop(order_process);
    drop(stock);

    // The decisions live in the crash run's own database; the inventory in the shop's.
    let got_statuses: Vec<(OrderStatus, Option<String>)> = {
        let mut v = Vec::new();
        for order in &placed {
            let row = store.reads().order_status(*order).await.expect("status").expect("decided");
            v.push((row.status, row.reason));
        }
        v
    };
    assert_eq!(got_statuses, want.0, "order statuses differ from the calm run");
    let levels = shop.store.reads().inventory_levels().await.expect("levels");
    let got_levels: Vec<(String, i64, i64, i64)> =
        levels.into_iter().map(|l| (l.sku, l.on_hand, l.reserved, l.shipped)).collect();
    assert_eq!(got_levels, want.1, "stock levels differ from the calm run");
    let stock_rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT sku, on_hand, reserved FROM stock_levels ORDER BY sku")
            .fetch_all(store.pool())
            .await
            .expect("stock");
    let calm_rows: Vec<(String, i64, i64)> = want.1.iter().map(|(s, o, r, _)| (s.clone(), *o, *r)).collect();
    assert_eq!(stock_rows, calm_rows, "the stock group's own rows");
    assert_eq!(store.reads().outbox_len().await.expect("outbox"), 0, "every decision was published");
    let log = decoded_log(&shop.kafka, &schemas::decisions_topic(&shop.topic)).await;
    let confirmations = decisions_per_order(&log, EventKind::OrderConfirmed);
    assert!(confirmations.values().all(|n| *n == 1), "an order confirmed under two ids");
    calm.close().await;
    shop.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_create_makes_every_topic_of_the_pipeline_and_groups_lists_the_stock_group() {
    let kafka = common::kafka();
    let topic = format!("made-{}", uuid::Uuid::new_v4().simple());
    let out = common::run_orderflow(&["topics", "create", "--topic", &topic, "--partitions", "2"]);
    for name in
        [topic.clone(), format!("{topic}-adjustments"), format!("stock-requests-{topic}"), format!("decisions-{topic}")]
    {
        assert!(out.contains(&format!("created topic {name} (2 partitions)")), "{out}");
        assert_eq!(common::log_ends(&kafka, &name).await.len(), 2, "{name}");
        let kept = infra::topics::retention(&kafka, &name, Duration::from_secs(10)).await.expect("retention");
        assert_eq!(kept, None, "{name} keeps every record: the log is the backup");
    }
    // A pipeline made with a bounded retention is brought back to keeping everything.
    let bounded = format!("bounded-{}", uuid::Uuid::new_v4().simple());
    common::run_orderflow(&["topics", "create", "--topic", &bounded, "--partitions", "1", "--retention", "1d"]);
    let day = infra::topics::retention(&kafka, &bounded, Duration::from_secs(10)).await.expect("retention");
    assert_eq!(day, Some(Duration::from_secs(86_400)));
    let out = common::run_orderflow(&["topics", "create", "--topic", &bounded]);
    assert!(out.contains("its retention was 1day; now forever"), "{out}");
    for name in schemas::pipeline_topics(&bounded) {
        let kept = infra::topics::retention(&kafka, &name, Duration::from_secs(10)).await.expect("retention");
        assert_eq!(kept, None, "{name}");
    }

    // A stock group with offsets on the stock topic shows up in `orderflow groups`.
    let database_url = common::fresh_database().await;
    let prefix = common::fresh_group_prefix();
    let store = Store::connect(&database_url).await.expect("store").with_group_prefix(&prefix).expect("prefix");
    let processes = common::Processes::start(&store, &topic, Duration::from_secs(900));
    let checkout = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await;
    let (status, answer) = checkout
        .post("/inventory/SKU-G/adjustments", &json!({"warehouse": "BER-1", "delta": 3, "reason": "received"}), None)
        .await;
    assert_eq!(status, 202, "{answer}");
    processes.settle(&store, &[]).await;
    let listed = common::run_orderflow_with(
        &["groups", "--json", "--topic", &topic, "--database-url", &database_url, "--group-prefix", &prefix],
        &[],
    );
    let stock_group = store.group(ProcessKind::Stock);
    let line = listed.lines().find(|l| l.contains(&stock_group)).unwrap_or_else(|| panic!("{listed}"));
    let group: Value = serde_json::from_str(line).expect("json");
    // The stock group read the adjustment from the adjustments topic.
    assert_eq!(group["topic"], schemas::adjustments_topic(&topic));
    assert_eq!(group["lag"], 0, "{group}");
    processes.stop().await;
}
