//! A region lost for good (`orderflow region takeover`): eu SIGKILLed under load after its
//! last records stopped being copied (a WAN's lag), us takes eu's orders over, eu comes
//! back fenced, and what eu acknowledged after the cut is reported and never applied.
use crate::common;
use crate::regions::{
    events_of, fresh_topic_in_both, kill_mirror, local_state, regions, ProcessRegion, Region, MIRROR,
};

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use infra::KafkaSettings;
use rdkafka::message::{Headers, Message};
use uuid::Uuid;

/// Units of the one SKU in each region's pool: fewer than the orders placed, so some
/// are rejected and "never oversold" is tested.
const UNITS_PER_POOL: i32 = 150;

/// What the client saw.
#[derive(Default)]
struct Client {
    /// Orders eu accepted, in order.
    eu_orders: Vec<Uuid>,
    /// Event ids eu acknowledged (placements and payments).
    eu_acknowledged: BTreeSet<Uuid>,
    /// Event ids us acknowledged for eu's orders after the takeover.
    us_acknowledged_for_eu: BTreeSet<Uuid>,
    sequence: usize,
}

impl Client {
    /// Places an order in eu; `false` when eu did not answer 202.
    async fn place_in_eu(&mut self, http: &reqwest::Client, eu_url: &str) -> bool {
        self.sequence += 1;
        let body = serde_json::json!({"customer_id": format!("c-{}", self.sequence), "currency": "EUR",
            "lines": [{"sku": "SKU-T", "quantity": 1, "unit_price_minor": 1000}], "ship_to": {"country": "DE"}});
        let Ok(response) = http.post(format!("{eu_url}/orders")).json(&body).send().await else { return false };
        if response.status().as_u16() != 202 {
            return false;
        }
        let answer: serde_json::Value = response.json().await.expect("a 202 body");
        self.eu_orders.push(answer["order_id"].as_str().expect("order id").parse().expect("uuid"));
        self.eu_acknowledged.insert(answer["event_id"].as_str().expect("event id").parse().expect("uuid"));
        true
    }

    /// Pays `order` through us's checkout: its status and answer.
    async fn pay(&mut self, us: &Region, order: Uuid) -> (u16, serde_json::Value) {
        let body = serde_json::json!({"status": "captured", "amount_minor": 1000, "provider_ref": "p"});
        let (status, answer, answered_by) = us.post(&format!("/orders/{order}/payments"), body).await;
        if status == 202 {
            let id: Uuid = answer["event_id"].as_str().expect("event id").parse().expect("uuid");
            if answered_by.as_deref() == Some("eu") {
                self.eu_acknowledged.insert(id);
            } else {
                self.us_acknowledged_for_eu.insert(id);
            }
        }
        (status, answer)
    }
}

/// Runs the orderflow binary as us's operator: its stdout as JSON.
fn operator_in_us(us: &Region, topic: &str, args: &[&str]) -> serde_json::Value {
    let env = [
        ("ORDERFLOW_BROKERS", us.kafka.brokers.as_str()),
        ("ORDERFLOW_DATABASE_URL", us.database_url.as_str()),
        ("ORDERFLOW_TOPIC", topic),
        ("ORDERFLOW_GROUP_PREFIX", us.group_prefix.as_str()),
        ("ORDERFLOW_REGION", "us"),
        ("ORDERFLOW_OPERATOR", "test-operator"),
    ];
    let out = common::run_orderflow_with(args, &env);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("orderflow {args:?} printed no JSON ({e}): {out}"))
}

/// How many records a copy holds; 0 while MirrorMaker 2 is still creating it (its
/// partitions may have no leader for a moment).
async fn copied_so_far(kafka: &KafkaSettings, copy: &str) -> i64 {
    orderflow::kit::log_ends(kafka, copy).await.map(|ends| ends.values().sum()).unwrap_or(0)
}

/// Each partition's end of the pipeline's topics in `kafka`.
async fn ends_of(kafka: &KafkaSettings, topic: &str) -> BTreeMap<String, BTreeMap<i32, i64>> {
    let mut ends = BTreeMap::new();
    for t in schemas::pipeline_topics(topic) {
        ends.insert(t.clone(), common::log_ends(kafka, &t).await);
    }
    ends
}

/// Event ids of the records on us's own topics about eu's orders, with their epoch header.
fn eu_records_on_us_log(kafka: &KafkaSettings, topic: &str) -> Vec<(Uuid, Option<String>)> {
    let mut out = Vec::new();
    let codec = schemas::Codec::builtin();
    for t in [topic.to_string(), schemas::decisions_topic(topic)] {
        let total: i64 = {
            let inspector = infra::group_inspect::Inspector::new(kafka, Duration::from_secs(5)).expect("inspector");
            inspector.log_ends(&t).expect("ends").values().sum()
        };
        for record in read_with_epoch(kafka, &t, total as usize) {
            let Some(event) = codec.decode(&record.0).ok() else { continue };
            let homed_in_eu = event.order_id().and_then(|id| schemas::Region::home_of(&id)).map(|r| r.to_string());
            if homed_in_eu.as_deref() == Some("eu") {
                out.push((event.envelope().event_id, record.1));
            }
        }
    }
    out
}

/// (payload, epoch header) of the first `expected` records of `topic`.
fn read_with_epoch(kafka: &KafkaSettings, topic: &str, expected: usize) -> Vec<(Vec<u8>, Option<String>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("epoch-reader-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let epoch = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == schemas::EPOCH_HEADER).and_then(|h| h.value))
                .map(|v| String::from_utf8_lossy(v).into_owned());
            out.push((m.payload().unwrap_or_default().to_vec(), epoch));
        }
    }
    out
}

/// Leaves the clusters as the other tests expect them, however the test ends: no fences,
/// the mirror restarted (a fenced copy stops MirrorMaker 2's task that writes it).
struct Restore {
    eu: KafkaSettings,
    us: KafkaSettings,
    topic: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let (eu, us, topic) = (self.eu.clone(), self.us.clone(), self.topic.clone());
        let lifted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let everyone = [infra::fence::EVERYONE.to_string()];
                let lost = orderflow::region_io::lost_region_fence(&topic, &everyone);
                let eu_region = schemas::Region::parse("eu").expect("region");
                let mirror = orderflow::region_io::mirror_fence(&eu_region, &topic);
                let eu_down = infra::fence::take_down(&eu, &lost, Duration::from_secs(10)).await;
                let us_down = infra::fence::take_down(&us, &mirror, Duration::from_secs(10)).await;
                (eu_down.is_ok(), us_down.is_ok())
            })
        })
        .join();
        kill_mirror();
        regions();
        if !std::thread::panicking() {
            assert_eq!(lifted.ok(), Some((true, true)), "the fences came down");
        }
    }
}

/// eu SIGKILLed for good under load, its last records never copied; us takes it over:
/// payments and shipments for eu's orders are accepted in us under epoch 2, eu comes back
/// fenced at its broker (nothing appended after the fence), its tail after the cut is
/// reported record by record and none of it is applied in us, no pool is oversold, and in
/// us every eu order's events before the cut are applied before any of the new epoch's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_region_is_taken_over_fenced_and_its_unreplicated_tail_reported_not_applied() {
    common::init_logs();
    let _mirror = MIRROR.lock().await;
    let exports = regions();
    let brokers_of = |r: &str| exports[&format!("ORDERFLOW_REGION_{}_BROKERS", r.to_uppercase())].clone();
    let (eu_kafka, us_kafka) = (KafkaSettings::new(brokers_of("eu")), KafkaSettings::new(brokers_of("us")));
    let topic = fresh_topic_in_both(&eu_kafka, &us_kafka, "takeover", 3).await;
    let _restore = Restore { eu: eu_kafka.clone(), us: us_kafka.clone(), topic: topic.clone() };
    let us_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let us_url = format!("http://{}", us_listener.local_addr().expect("addr"));
    let eu_database = common::fresh_database().await;
    let mut eu = ProcessRegion::new("eu", &brokers_of("eu"), &eu_database, &topic, ("us", &us_url));
    let mut us = Region::open("us", "eu", us_kafka.clone(), &topic, us_listener, &eu.url).await;
    eu.start().await;
    let http = orderflow::load::http_client_with(Some(&common::token(common::ALL_SCOPES)));
    for url in [&eu.url, &us.url] {
        let body = serde_json::json!({"warehouse": "W-1", "delta": UNITS_PER_POOL, "reason": "received"});
        let response = http.post(format!("{url}/inventory/SKU-T/adjustments")).json(&body).send().await.expect("stock");
        assert_eq!(response.status().as_u16(), 202);
    }

    // The copy runs (MirrorMaker 2 may still be starting after an earlier test's restart).
    let adjustments = format!("eu.{}", schemas::adjustments_topic(&topic));
    let deadline = Instant::now() + Duration::from_secs(120);
    while copied_so_far(&us.kafka, &adjustments).await == 0 {
        assert!(Instant::now() < deadline, "MirrorMaker 2 copies nothing of eu into us");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Load in eu; orders paid through us (forwarded to eu) a few orders later.
    let mut client = Client::default();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert!(client.place_in_eu(&http, &eu.url).await, "eu accepts orders while it runs");
        if client.eu_orders.len() > 10 && client.eu_orders.len() % 2 == 0 {
            let order = client.eu_orders[client.eu_orders.len() - 10];
            assert_eq!(client.pay(&us, order).await.0, 202);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Everything so far is copied (each partition's copy runs), then the copy stops (a
    // WAN's lag): what eu acknowledges from here on is its tail.
    let copy = format!("eu.{topic}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let source: i64 = common::log_ends(&eu_kafka, &topic).await.values().sum();
        let copied = copied_so_far(&us.kafka, &copy).await;
        if copied >= source {
            break;
        }
        assert!(Instant::now() < deadline, "MirrorMaker 2 copied {copied} of eu's {source} records");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mirrored_orders = client.eu_orders.len().saturating_sub(5);
    kill_mirror();
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        assert!(client.place_in_eu(&http, &eu.url).await);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // eu is lost: broker, checkout, members at once. us's projections stop too, so they
    // later meet the new epoch's records before the copy's (the gate must hold them).
    let pid = std::fs::read_to_string(local_state().join("kafka-region-eu/node-1.pid")).expect("eu broker's pid");
    let killed_at = Instant::now();
    assert!(std::process::Command::new("kill").args(["-9", pid.trim()]).status().expect("kill").success());
    eu.kill();
    us.stop_projections().await;
    let (status, answer) = client.pay(&us, client.eu_orders[0]).await;
    assert_eq!((status, answer["error"].as_str()), (503, Some("home_region_unavailable")), "{answer}");

    // The operator in us takes eu over; eu's brokers do not answer, so its fence waits.
    let report = operator_in_us(
        &us,
        &topic,
        &[
            "region",
            "takeover",
            "eu",
            "--by",
            "us",
            "--lost-brokers",
            &brokers_of("eu"),
            "--lost-database-url",
            &eu_database,
            "--fence-within",
            "3s",
            "--reason",
            "eu's data centre burned down",
        ],
    );
    assert_eq!((report["owner"].as_str(), report["epoch"].as_u64()), (Some("us"), Some(2)), "{report}");
    assert!(report["lost_region_fence"].as_str().is_some_and(|f| f.starts_with("pending")), "{report}");

    // Payments for eu's orders: accepted in us itself now (not forwarded), under epoch 2.
    let mut first_accepted = None;
    let mut paid = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let to_pay: Vec<Uuid> = client.eu_orders[..mirrored_orders].iter().copied().step_by(3).collect();
    for order in to_pay {
        loop {
            let (status, answer) = client.pay(&us, order).await;
            if status == 202 {
                assert_eq!(answer["region"].as_str(), Some("us"), "{answer}");
                first_accepted.get_or_insert_with(|| killed_at.elapsed());
                paid.push(order);
                break;
            }
            assert!(Instant::now() < deadline, "us does not accept payments for eu's orders: {answer}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let rto = first_accepted.expect("a payment accepted");
    for order in paid.iter().take(10) {
        let body = serde_json::json!({"status": "packed", "warehouse": "W-1"});
        let (status, answer, _) = us.post(&format!("/orders/{order}/shipments"), body).await;
        assert_eq!(status, 202, "a shipment for eu's order {order} in us: {answer}");
        client.us_acknowledged_for_eu.insert(answer["event_id"].as_str().expect("event id").parse().expect("uuid"));
    }
    us.start_projections();

    // eu's pool is frozen; us adopts its last known available units less a 10 % margin
    // (audited), once however often it is run: received = on hand + shipped.
    let adopt = ["region", "adopt-stock", "eu", "--margin", "10"];
    let adopted = operator_in_us(&us, &topic, &adopt);
    let frozen = adopted["frozen_available"]["SKU-T"].as_i64().expect("eu's frozen level");
    let units = adopted["adopted"]["SKU-T"].as_i64().expect("adopted units");
    assert_eq!(units, frozen * 9 / 10, "{adopted}");
    assert_eq!(operator_in_us(&us, &topic, &adopt)["adopted"], adopted["adopted"]);
    let us_pool = |levels: &[projections::store::InventoryLevel]| {
        levels.iter().find(|l| l.sku == "SKU-T" && l.region.as_deref() == Some("us")).map(|l| l.on_hand + l.shipped)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let levels = us.store.reads().inventory_levels().await.expect("levels");
        if us_pool(&levels) == Some(i64::from(UNITS_PER_POOL) + units) {
            break;
        }
        assert!(Instant::now() < deadline, "us's pool did not get eu's {units} units: {levels:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // eu comes back: its broker first, fenced before anything of eu starts.
    regions();
    let fenced = common::run_orderflow_with(
        &["region", "fence", "eu", "--lost-brokers", &brokers_of("eu"), "--wait", "90s"],
        &[("ORDERFLOW_TOPIC", topic.as_str())],
    );
    assert!(fenced.contains("\"fenced\""), "{fenced}");
    let at_fence = ends_of(&eu_kafka, &topic).await;
    // eu started again: its checkout sends a new order, and a payment for eu's order, to
    // us, which writes eu's orders now; eu's broker refuses whoever appends to eu's log.
    eu.start().await;
    let body = serde_json::json!({"customer_id": "late", "currency": "EUR",
        "lines": [{"sku": "SKU-T", "quantity": 1, "unit_price_minor": 1000}], "ship_to": {"country": "DE"}});
    let response = http.post(format!("{}/orders", eu.url)).json(&body).send().await.expect("eu answers");
    let answered_by = response.headers().get(producers::checkout::regions::ANSWERED_BY_HEADER).cloned();
    let (status, said) = (response.status().as_u16(), response.text().await.unwrap_or_default());
    assert_eq!(status, 202, "a new order at eu's checkout, taken over: {said}");
    assert_eq!(answered_by.as_ref().and_then(|v| v.to_str().ok()), Some("us"), "placed by us, which writes for eu");
    let order = client.eu_orders[1];
    let body = serde_json::json!({"status": "captured", "amount_minor": 1000, "provider_ref": "late"});
    let response =
        http.post(format!("{}/orders/{order}/payments", eu.url)).json(&body).send().await.expect("eu answers");
    let answered_by = response.headers().get(producers::checkout::regions::ANSWERED_BY_HEADER).cloned();
    assert_eq!(response.status().as_u16(), 202, "{:?}", response.text().await);
    assert_eq!(answered_by.as_ref().and_then(|v| v.to_str().ok()), Some("us"), "eu sends eu's orders to us now");
    // A writer going straight to eu's broker is refused too.
    let producer: rdkafka::producer::FutureProducer = eu_kafka.client_config().create().expect("producer");
    let sent = producer
        .send(rdkafka::producer::FutureRecord::to(&topic).key("x").payload("late"), Duration::from_secs(10))
        .await;
    assert!(
        matches!(&sent, Err((e, _)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed)),
        "an append to eu's log after the fence: {:?}",
        sent.map_err(|(e, _)| e)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ends_of(&eu_kafka, &topic).await, at_fence, "records appended in eu after the fence");

    // The tail: what eu acknowledged that us's copy did not hold at the cut.
    let owners = us.store.operations().owners().await.expect("handovers");
    let handover = owners.handover(&schemas::Region::parse("eu").expect("region")).expect("recorded").clone();
    let cut: BTreeMap<(String, i32), i64> =
        handover.cut.iter().map(|c| ((format!("eu.{}", c.topic), c.partition), c.next_offset)).collect();
    let copied: BTreeSet<Uuid> =
        events_of(&us.kafka, &format!("eu.{topic}")).await.iter().map(|e| e.envelope().event_id).collect();
    let unreplicated: BTreeSet<Uuid> = client.eu_acknowledged.difference(&copied).copied().collect();
    let tail = operator_in_us(&us, &topic, &["region", "tail", "eu", "--lost-brokers", &brokers_of("eu")]);
    let tail_ids: BTreeSet<Uuid> = tail["tail"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["event_id"].as_str().and_then(|id| id.parse().ok()))
        .collect();
    // Decisions us took again itself carry the ids eu's had: they are us's, not the tail's
    // (us may take some only after the tail is listed: its own log tells at the end).
    let not_taken_again: BTreeSet<Uuid> = tail["tail"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["decided_again"] == false)
        .filter_map(|r| r["event_id"].as_str().and_then(|id| id.parse().ok()))
        .collect();
    eprintln!(
        "acknowledged by eu {}, copied {}, unreplicated {}, tail {} {}",
        client.eu_acknowledged.len(),
        copied.len(),
        unreplicated.len(),
        tail["records"],
        tail["by_kind"]
    );
    assert!(!unreplicated.is_empty(), "the test needs a tail: eu acknowledged nothing after the copy stopped");
    assert!(
        unreplicated.is_subset(&tail_ids),
        "acknowledged by eu, not in us, not reported: {:?}",
        unreplicated.difference(&tail_ids).collect::<Vec<_>>()
    );
    assert!(tail["tail"]
        .as_array()
        .expect("records")
        .iter()
        .all(|r| r["resolution"].as_str().is_some_and(|s| !s.is_empty())));
    // The mirror of eu's pipeline stays fenced: nothing past the cut reaches us's copies.
    tokio::time::sleep(Duration::from_secs(8)).await;
    for ((copy, partition), end) in &cut {
        let now = common::log_ends(&us.kafka, copy).await.get(partition).copied().unwrap_or(0);
        assert_eq!(now, *end, "{copy}/{partition} grew past the cut");
    }

    // us settles; nothing of the tail is applied, nothing oversold, every eu order's
    // events before the cut come before the new epoch's in its history.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let snapshot = us.store.reads().snapshot().await.expect("us views");
        assert!(
            snapshot.inventory_levels.iter().all(|l| l.available >= 0),
            "oversold: {:?}",
            snapshot.inventory_levels
        );
        let captured: BTreeSet<Uuid> =
            snapshot.payments.iter().filter(|p| p.status.as_str() == "captured").map(|p| p.order_id).collect();
        if paid.iter().all(|o| captured.contains(o)) {
            break;
        }
        assert!(Instant::now() < deadline, "us's views lack payments it accepted for eu's orders");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let levels = us.store.reads().inventory_levels().await.expect("levels");
    assert_eq!(us_pool(&levels), Some(i64::from(UNITS_PER_POOL) + units), "eu's units adopted once: {levels:?}");
    // What us appended itself, once it has decided what it had to.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let on_us_log = tokio::task::spawn_blocking({
        let (kafka, topic) = (us.kafka.clone(), topic.clone());
        move || eu_records_on_us_log(&kafka, &topic)
    })
    .await
    .expect("reader");
    assert!(!on_us_log.is_empty(), "us appended eu's orders' events");
    assert!(on_us_log.iter().all(|(_, epoch)| epoch.as_deref() == Some("2")), "{on_us_log:?}");
    let new_epoch: BTreeSet<Uuid> = on_us_log.iter().map(|(id, _)| *id).collect();
    assert!(client.us_acknowledged_for_eu.is_subset(&new_epoch));
    let reads = us.store.reads();
    let mut checked = 0;
    for order in &client.eu_orders {
        let history = reads.order_history(&order.to_string()).await.expect("history").unwrap_or_default();
        for entry in &history {
            assert!(
                !not_taken_again.contains(&entry.event_id) || new_epoch.contains(&entry.event_id),
                "the tail's event {} ({}) of order {order} was applied in us",
                entry.event_id,
                entry.kind
            );
        }
        // The history is in event time: the facts us accepted come after everything of
        // the copy (decisions us took again keep the time eu's replay gives them).
        let first_new = history.iter().position(|e| client.us_acknowledged_for_eu.contains(&e.event_id));
        if let Some(first_new) = first_new {
            checked += 1;
            assert!(
                history[first_new..].iter().all(|e| new_epoch.contains(&e.event_id)),
                "order {order}: an event from before the cut shown after the new epoch's facts: {history:?}"
            );
        }
    }
    assert!(checked > 0, "no eu order has events of the new epoch in us's history");
    eprintln!(
        "takeover: {} orders placed in eu, RPO {} record(s) eu acknowledged that us never held (tail reported {}), \
         RTO {rto:?} (eu killed → us accepting a payment for eu's order), {} payments and 10 shipments for eu's \
         orders accepted in us",
        client.eu_orders.len(),
        unreplicated.len(),
        tail_ids.len(),
        paid.len()
    );

    // Failback under load: eu's orders get payments (through either checkout, retried with
    // the same key on 503) while us hands them back to eu.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn({
        let (stop, http, urls) = (stop.clone(), http.clone(), [eu.url.clone(), us.url.clone()]);
        let orders: Vec<Uuid> = client.eu_orders[..mirrored_orders].to_vec();
        async move {
            let mut acknowledged = Vec::new();
            let (mut draining, mut n) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let (order, url) = (orders[n % orders.len()], &urls[n % 2]);
                let reference = format!("failback-{n}");
                let body = serde_json::json!({"status": "authorized", "amount_minor": 1, "provider_ref": reference});
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let response = http
                        .post(format!("{url}/orders/{order}/payments"))
                        .header("Idempotency-Key", &reference)
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(response) = response {
                        let status = response.status().as_u16();
                        let answered_by = response
                            .headers()
                            .get(producers::checkout::regions::ANSWERED_BY_HEADER)
                            .and_then(|v| v.to_str().ok().map(String::from));
                        let answer: serde_json::Value = response.json().await.unwrap_or_default();
                        if status == 202 {
                            let id: Uuid = answer["event_id"].as_str().expect("event id").parse().expect("uuid");
                            let region = answered_by.or_else(|| answer["region"].as_str().map(String::from));
                            acknowledged.push((order, id, reference.clone(), region.unwrap_or_default()));
                            break;
                        }
                        draining += usize::from(answer["error"] == "region_draining");
                    }
                    assert!(Instant::now() < deadline, "payment {reference} for {order} never accepted");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            (acknowledged, draining)
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failback = tokio::task::spawn_blocking({
        let env = [
            ("ORDERFLOW_BROKERS", us.kafka.brokers.clone()),
            ("ORDERFLOW_DATABASE_URL", us.database_url.clone()),
            ("ORDERFLOW_TOPIC", topic.clone()),
            ("ORDERFLOW_GROUP_PREFIX", us.group_prefix.clone()),
            ("ORDERFLOW_REGION", "us".to_string()),
            ("ORDERFLOW_OPERATOR", "test-operator".to_string()),
        ];
        let args = [
            "region".to_string(),
            "failback".into(),
            "eu".into(),
            "--by".into(),
            "us".into(),
            "--home-brokers".into(),
            brokers_of("eu"),
            "--home-database-url".into(),
            eu_database.clone(),
            "--drain-settle".into(),
            "4s".into(),
        ];
        move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = common::run_orderflow_with(&args, &env);
            serde_json::from_str::<serde_json::Value>(&out).unwrap_or_else(|e| panic!("no JSON ({e}): {out}"))
        }
    })
    .await
    .expect("failback");
    assert_eq!((failback["owner"].as_str(), failback["epoch"].as_u64()), (Some("eu"), Some(3)), "{failback}");
    // MirrorMaker 2's eu→us task stopped at the mirror fence: the operator restarts it.
    kill_mirror();
    regions();
    // eu takes payments for its orders itself again, then the load stops.
    let deadline = Instant::now() + Duration::from_secs(60);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (acknowledged, draining) = load.await.expect("load");
    assert!(draining > 0, "no request met the drain");
    let by_eu_after: Vec<&(Uuid, Uuid, String, String)> = acknowledged.iter().filter(|a| a.3 == "eu").collect();
    assert!(!by_eu_after.is_empty(), "eu accepted no payment for its orders after the failback");

    // Lost 0, doubled 0: each payment acknowledged is in both regions' history of its order
    // once, and in us's, after every event us appended under epoch 2.
    let eu_reads = projections::store::Store::connect(&eu_database).await.expect("eu store");
    loop {
        let mut missing = Vec::new();
        for (order, id, reference, region) in &acknowledged {
            for (name, reads) in [("us", us.store.reads()), ("eu", eu_reads.reads())] {
                let history = reads.order_history(&order.to_string()).await.expect("history").unwrap_or_default();
                let copies =
                    history.iter().filter(|e| e.summary.ends_with(&format!("provider ref {reference}"))).count();
                assert!(copies <= 1, "payment {reference} applied {copies} times in {name}");
                if !history.iter().any(|e| e.event_id == *id) {
                    missing.push(format!("{reference} ({region}) in {name}"));
                }
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "acknowledged payments not applied: {missing:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let taken_back: BTreeSet<Uuid> = by_eu_after.iter().map(|a| a.1).collect();
    for order in &client.eu_orders[..mirrored_orders] {
        let history = us.store.reads().order_history(&order.to_string()).await.expect("history").unwrap_or_default();
        if let Some(first_back) = history.iter().position(|e| taken_back.contains(&e.event_id)) {
            assert!(
                !history[first_back..].iter().any(|e| new_epoch.contains(&e.event_id)),
                "order {order}: an event us appended under epoch 2 applied after eu's epoch 3: {history:?}"
            );
        }
    }
    eprintln!(
        "failback: {} payments acknowledged during it ({} by eu after the handover), {draining} answers 503 \
         region_draining, each retried until accepted; {}",
        acknowledged.len(),
        by_eu_after.len(),
        failback["seconds"]
    );

    eu.kill();
    us.stop().await;
}

/// A region whose last run did not end with `region stop` starts fenced at its own brokers
/// (its writers refused) until an operator lifts the fence; a clean stop starts clean; a
/// region another took over is not lifted (it fails back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_stopped_uncleanly_starts_fenced_until_an_operator_lifts_it() {
    common::init_logs();
    let exports = regions();
    let brokers = exports["ORDERFLOW_REGION_EU_BROKERS"].clone();
    let kafka = KafkaSettings::new(brokers.clone());
    let topic = orderflow::kit::fresh_topic(&kafka, "guard", 1).await.expect("topics");
    let database = common::fresh_database().await;
    let env = [
        ("ORDERFLOW_BROKERS", brokers.as_str()),
        ("ORDERFLOW_DATABASE_URL", database.as_str()),
        ("ORDERFLOW_TOPIC", topic.as_str()),
        ("ORDERFLOW_REGION", "eu"),
        ("ORDERFLOW_OPERATOR", "test-operator"),
    ];
    let region = |command: &str| -> serde_json::Value {
        let out = common::run_orderflow_with(&["region", command, "eu"], &env);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("region {command} printed no JSON ({e}): {out}"))
    };
    let producer: rdkafka::producer::FutureProducer = kafka.client_config().create().expect("producer");
    let append = || async {
        producer
            .send(rdkafka::producer::FutureRecord::to(&topic).key("k").payload("v"), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e.rdkafka_error_code())
    };
    let refused = Some(rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed);
    // A broker applies ACL changes from its metadata log: soon, not at once.
    let accepted_soon = || async {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match append().await {
                Ok(_) => return true,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(_) => return false,
            }
        }
    };
    let refused_soon = || async {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match append().await {
                Err(code) if code == refused => return true,
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                _ => return false,
            }
        }
    };

    assert_eq!(region("start")["event"], "started", "a first start is a clean one");
    assert!(append().await.is_ok());
    // Started again without a stop: a crash. Fenced until lifted.
    assert_eq!(region("start")["event"], "started_fenced");
    assert!(refused_soon().await, "a writer of a region started after an unclean stop");
    assert_eq!(region("lift")["event"], "lifted");
    assert!(accepted_soon().await, "lifted");
    // A planned stop: the next start is clean.
    assert_eq!(region("stop")["event"], "stopped");
    assert_eq!(region("start")["event"], "started");
    assert!(append().await.is_ok());
    // Taken over while it was gone: started fenced, and not lifted by hand.
    let store = projections::store::Store::connect(&database).await.expect("store");
    let handover = schemas::Handover {
        region: "eu".into(),
        owner: "us".into(),
        epoch: 2,
        cut: Vec::new(),
        at_ms: 0,
        decided_by: "test".into(),
        reason: "eu lost".into(),
        earlier_cuts: Vec::new(),
    };
    store.operations().record_handover(&handover).await.expect("handover");
    assert_eq!(region("start")["event"], "started_fenced");
    let mut lift = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"));
    lift.args(["region", "lift", "eu"]).envs(env.iter().copied());
    let output = lift.output().expect("run orderflow");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && said.contains("failback"), "lift of a region taken over: {said}");
    assert!(refused_soon().await, "still fenced");
    let everyone = [infra::fence::EVERYONE.to_string()];
    let fence = orderflow::region_io::lost_region_fence(&topic, &everyone);
    infra::fence::take_down(&kafka, &fence, Duration::from_secs(10)).await.expect("fence down");
}
