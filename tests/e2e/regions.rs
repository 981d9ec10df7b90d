//! Two regions on one machine (`infra/local/up --regions eu,us`): a Kafka cluster and a
//! database per region, bridged by MirrorMaker 2 in both directions. What one region
//! appends reaches the other under `<region>.<topic>`, on the same partition, in the same
//! order, with its key and headers: what the read path of global distribution builds on.
use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use infra::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Taken by every test here: one stops MirrorMaker 2 for a while, which the others'
/// copies must not see.
pub(crate) static MIRROR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The exports of `infra/local/up --regions eu,us`.
pub(crate) fn regions() -> BTreeMap<String, String> {
    let up = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/local/up");
    let output = std::process::Command::new(up).args(["--regions", "eu,us"]).output().expect("run infra/local/up");
    assert!(output.status.success(), "infra/local/up --regions eu,us: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

/// A fresh pipeline (its four topics, `partitions` each) in both regions' clusters.
pub(crate) async fn fresh_topic_in_both(
    eu: &KafkaSettings,
    us: &KafkaSettings,
    prefix: &str,
    partitions: i32,
) -> String {
    let topic = orderflow::kit::fresh_topic(eu, prefix, partitions).await.expect("eu topics");
    let specs: Vec<infra::topics::TopicSpec> = schemas::pipeline_topics(&topic)
        .into_iter()
        .map(|name| infra::topics::TopicSpec { name, partitions, replication_factor: None, configs: Vec::new() })
        .collect();
    infra::topics::create_topics(us, &specs, Duration::from_secs(30)).await.expect("us topics");
    topic
}

/// (partition, key, the principal header) of every record of `topic`, once `expected` are
/// there, or whatever arrived within `within`.
fn read_with_headers(
    kafka: &KafkaSettings,
    topic: &str,
    expected: usize,
    within: Duration,
) -> Vec<(i32, String, String)> {
    let deadline = Instant::now() + within;
    let inspector = infra::group_inspect::Inspector::new(kafka, Duration::from_secs(5)).expect("inspector");
    // The mirror creates the copy when it next looks for topics (every 5 s here).
    let partitions = loop {
        let partitions = inspector.partitions(topic).expect("metadata");
        if !partitions.is_empty() || Instant::now() > deadline {
            break partitions;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("region-reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        assignment.add_partition_offset(topic, *p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::new();
    while records.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let principal = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == schemas::PRINCIPAL_HEADER).and_then(|h| h.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
            records.push((m.partition(), key, principal));
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_region_appends_reaches_the_other_under_its_region_name_in_order_with_keys_and_headers() {
    common::init_logs();
    let _mirror = MIRROR.lock().await;
    let exports = regions();
    assert_eq!(exports["ORDERFLOW_REGIONS"], "eu,us");
    assert!(exports["ORDERFLOW_REGION_EU_DATABASE_URL"].ends_with("/orderflow_eu"), "{exports:?}");
    let eu = KafkaSettings::new(exports["ORDERFLOW_REGION_EU_BROKERS"].clone());
    let us = KafkaSettings::new(exports["ORDERFLOW_REGION_US_BROKERS"].clone());
    assert_ne!(eu.brokers, us.brokers);

    // A pipeline's topics in each region; records appended in both.
    let topic = fresh_topic_in_both(&eu, &us, "regions", 3).await;
    let mut sent: BTreeMap<String, Vec<(i32, String, String)>> = BTreeMap::new();
    for (region, kafka, n) in [("eu", &eu, 40), ("us", &us, 10)] {
        let producer: FutureProducer = kafka.client_config().create().expect("producer");
        for i in 0..n {
            let key = format!("{region}-order-{}", i % 7);
            let by = format!("shop-{region}");
            let headers = OwnedHeaders::new().insert(Header { key: schemas::PRINCIPAL_HEADER, value: Some(&by) });
            let record = FutureRecord::to(&topic).key(&key).payload("x").headers(headers);
            let partition = producer.send(record, Duration::from_secs(10)).await.expect("appended").partition;
            sent.entry(region.to_string()).or_default().push((partition, key, by));
        }
    }

    // Each region's records in the other, on their partitions, in their order.
    for (from, into) in [("eu", &us), ("us", &eu)] {
        let copy = format!("{from}.{topic}");
        let want = sent[from].clone();
        let (kafka, name, expected) = (into.clone(), copy.clone(), want.len());
        let got =
            tokio::task::spawn_blocking(move || read_with_headers(&kafka, &name, expected, Duration::from_secs(90)))
                .await
                .expect("reader");
        let by_partition = |records: &[(i32, String, String)]| -> BTreeMap<i32, Vec<(String, String)>> {
            let mut out: BTreeMap<i32, Vec<(String, String)>> = BTreeMap::new();
            for (p, k, h) in records {
                out.entry(*p).or_default().push((k.clone(), h.clone()));
            }
            out
        };
        assert_eq!(by_partition(&got), by_partition(&want), "{copy}: partitions, order, keys and headers kept");
    }
}

/// One region of a two-region shop: its checkout (serving on `url`), its database, its
/// processes and its projection members, which read its own topics and the other
/// region's copies.
pub(crate) struct Region {
    pub(crate) name: schemas::Region,
    pub(crate) kafka: KafkaSettings,
    pub(crate) store: projections::store::Store,
    pub(crate) database_url: String,
    pub(crate) group_prefix: String,
    pub(crate) url: String,
    pub(crate) client: orderflow::load::HttpClient,
    processes: Option<common::Processes>,
    projections: Vec<consumers::MemberHandle>,
    topic: String,
    there: schemas::Region,
    server: tokio::task::JoinHandle<()>,
}

impl Region {
    /// Its checkout serves on `listener`, bound beforehand: each region's checkout must know
    /// the other's URL.
    pub(crate) async fn open(
        name: &str,
        other: &str,
        kafka: KafkaSettings,
        topic: &str,
        listener: tokio::net::TcpListener,
        other_url: &str,
    ) -> Region {
        let (here, there) =
            (schemas::Region::parse(name).expect("region"), schemas::Region::parse(other).expect("region"));
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let checkouts = [(there.clone(), other_url.to_string())].into();
        let database_url = common::fresh_database().await;
        let group_prefix = common::fresh_group_prefix();
        let publisher = producers::publisher::PublisherConfig {
            topic: topic.to_string(),
            deadline: Duration::from_secs(5),
            linger_ms: 1,
            codec: schemas::Codec::builtin(),
        };
        let state = producers::checkout::AppState::connect(&kafka, &database_url, publisher, common::test_access())
            .await
            .expect("checkout")
            .in_region(
                producers::checkout::regions::Regions::new(here.clone(), checkouts, Duration::from_secs(8))
                    .expect("regions")
                    // Orders shipping to the US are served by us; the rest where placed.
                    .with_destinations([("US".to_string(), schemas::Region::parse("us").expect("region"))].into())
                    .with_owners(orderflow::region_cmd::follow_handovers(
                        projections::store::Store::connect(&database_url).await.expect("store"),
                        Duration::from_millis(500),
                    )),
            );
        let server = tokio::spawn(async move {
            let _ = producers::checkout::run(listener, state, std::future::pending()).await;
        });
        let store = projections::store::Store::connect(&database_url)
            .await
            .expect("store")
            .with_group_prefix(&group_prefix)
            .expect("prefix")
            .with_region(Some(&here));
        let processes = Some(common::Processes::start_in(
            &kafka,
            &store,
            topic,
            Duration::from_secs(600),
            &infra::schema_registry::Contract::embedded(),
        ));
        let client = orderflow::load::http_client_with(Some(&common::token(common::ALL_SCOPES)));
        let mut region = Region {
            name: here,
            kafka,
            store,
            database_url,
            group_prefix,
            url,
            client,
            processes,
            projections: Vec::new(),
            topic: topic.to_string(),
            there,
            server,
        };
        region.start_projections();
        region
    }

    /// Starts a member of each projection, reading this region's log and the other's copy.
    pub(crate) fn start_projections(&mut self) {
        self.projections = projections::ProjectionKind::ALL
            .into_iter()
            .map(|kind| {
                let mut config = common::member_config(kind, &self.topic, &self.store.group(kind));
                config.mirrors = vec![self.there.clone()];
                consumers::member::run_member(config, &self.kafka, self.store.clone()).expect("projection member")
            })
            .collect();
    }

    /// Stops the projections' members (the order process and the stock group keep running).
    pub(crate) async fn stop_projections(&mut self) {
        for member in std::mem::take(&mut self.projections) {
            member.stop().await.expect("projection member stops");
        }
    }

    /// POSTs to this region's checkout: status, JSON answer and the region that answered.
    pub(crate) async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value, Option<String>) {
        let response = self.client.post(format!("{}{path}", self.url)).json(&body).send().await.expect("http");
        let status = response.status().as_u16();
        let answered_by = response
            .headers()
            .get(producers::checkout::regions::ANSWERED_BY_HEADER)
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let answer = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, answer, answered_by)
    }

    pub(crate) async fn stop(mut self) {
        self.server.abort();
        for member in std::mem::take(&mut self.projections) {
            member.stop().await.expect("projection member stops");
        }
        if let Some(processes) = self.processes.take() {
            processes.stop().await;
        }
    }
}

/// Every decoded event of `topic` in `kafka` (the whole log as it is now).
pub(crate) async fn events_of(kafka: &KafkaSettings, topic: &str) -> Vec<schemas::Event> {
    let total: i64 = common::log_ends(kafka, topic).await.values().sum();
    let (kafka, topic) = (kafka.clone(), topic.to_string());
    let records =
        tokio::task::spawn_blocking(move || common::read_topic(&kafka, &topic, total as usize)).await.expect("reader");
    let codec = schemas::Codec::builtin();
    records.iter().filter_map(|r| codec.decode(&r.payload).ok()).collect()
}

/// Orders placed in each region of the fidelity test.
const ORDERS_PER_REGION: usize = 1_000;
/// Requests in flight at once.
const CONCURRENCY: usize = 16;
/// How many times MirrorMaker 2 is SIGKILLed under load.
const MIRROR_KILLS: usize = 5;

/// p50 and p99 of `durations`.
fn percentiles(durations: &mut [Duration]) -> (Duration, Duration) {
    durations.sort();
    let at = |q: f64| durations.get(((durations.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default();
    (at(0.5), at(0.99))
}

/// Where `infra/local/up` keeps its processes' state.
pub(crate) fn local_state() -> std::path::PathBuf {
    std::env::var("ORDERFLOW_LOCAL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".local"))
}

/// SIGKILLs MirrorMaker 2 (`infra/local/up --regions` starts it again).
pub(crate) fn kill_mirror() {
    let pidfile = local_state().join("mirror/mm2.pid");
    let pid = std::fs::read_to_string(&pidfile).expect("MirrorMaker 2's pid file");
    let killed = std::process::Command::new("kill").args(["-9", pid.trim()]).status().expect("kill");
    assert!(killed.success(), "MirrorMaker 2 (pid {pid}) killed");
}

/// Orders placed in each region, paid for and shipped through the *other* region's
/// checkout: every such write is forwarded to the order's home and appended there once,
/// nothing about an order is appended outside its home, and both regions' views end equal,
/// each holding every order of both regions with its home region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_of_both_regions_show_in_both_and_writes_for_another_regions_orders_are_appended_once_in_their_home() {
    common::init_logs();
    let _mirror = MIRROR.lock().await;
    let exports = regions();
    let kafka_of =
        |r: &str| KafkaSettings::new(exports[&format!("ORDERFLOW_REGION_{}_BROKERS", r.to_uppercase())].clone());
    let topic = fresh_topic_in_both(&kafka_of("eu"), &kafka_of("us"), "global", 3).await;
    let (eu_listener, us_listener) = (
        tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    );
    let url_of = |l: &tokio::net::TcpListener| format!("http://{}", l.local_addr().expect("addr"));
    let (eu_url, us_url) = (url_of(&eu_listener), url_of(&us_listener));
    let eu = Region::open("eu", "us", kafka_of("eu"), &topic, eu_listener, &us_url).await;
    let us = Region::open("us", "eu", kafka_of("us"), &topic, us_listener, &eu_url).await;
    let regions = [&eu, &us];

    // Each region's own pool of the one SKU.
    for region in regions {
        let body = serde_json::json!({"warehouse": "W-1", "delta": 100_000, "reason": "received"});
        let (status, answer, _) = region.post("/inventory/SKU-G/adjustments", body).await;
        assert_eq!(status, 202, "{answer}");
    }
    // MirrorMaker 2 SIGKILLed five times while the load runs (exactly-once off: it copies
    // again what it copied since its last offset commit).
    let copy = (us.kafka.clone(), eu.name.mirrored(&topic));
    let killer = std::thread::spawn(move || {
        let inspector = infra::group_inspect::Inspector::new(&copy.0, Duration::from_secs(5)).expect("inspector");
        let copied = || inspector.log_ends(&copy.1).map(|ends| ends.values().sum::<i64>()).unwrap_or(0);
        for _ in 0..MIRROR_KILLS {
            // While it copies, if it does within 8 s: what it copied since its last offset
            // commit (every 5 s) it copies again after the restart.
            let (started, before) = (Instant::now(), copied());
            while copied() == before && started.elapsed() < Duration::from_secs(8) {
                std::thread::sleep(Duration::from_millis(200));
            }
            std::thread::sleep(Duration::from_millis(2_500));
            kill_mirror();
            self::regions();
        }
    });
    let placed_started = Instant::now();
    let placements = futures::stream::iter(0..ORDERS_PER_REGION * 2)
        .map(|i| {
            let region = regions[i % 2];
            async move {
                let body = serde_json::json!({"customer_id": format!("c-{i}"), "currency": "EUR",
                    "lines": [{"sku": "SKU-G", "quantity": 1, "unit_price_minor": 1000}], "ship_to": {"country": "DE"}});
                let started = Instant::now();
                let (status, answer, answered_by) = region.post("/orders", body).await;
                (region, status, answer, answered_by, started.elapsed())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let placing = placed_started.elapsed();
    let mut placed: BTreeMap<uuid::Uuid, String> = BTreeMap::new();
    let mut direct = Vec::new();
    for (region, status, answer, answered_by, took) in placements {
        assert_eq!((status, answered_by), (202, None), "{answer}");
        assert_eq!(answer["region"], region.name.as_str(), "the answer names the region");
        let id: uuid::Uuid = answer["order_id"].as_str().expect("order id").parse().expect("uuid");
        assert_eq!(schemas::Region::home_of(&id).as_ref(), Some(&region.name), "the id names its home");
        placed.insert(id, region.name.to_string());
        direct.push(took);
    }

    // Payments, then packing, through the other region's checkout (forwarded to the
    // order's home); then shipping through the home's own, to compare.
    let (eu_ref, us_ref) = (&eu, &us);
    let phases = [
        ("payments", serde_json::json!({"status": "captured", "amount_minor": 1000, "provider_ref": "p"}), true),
        ("shipments", serde_json::json!({"status": "packed", "warehouse": "W-1"}), true),
        ("shipments", serde_json::json!({"status": "shipped", "warehouse": "W-1", "carrier": "c"}), false),
    ];
    let mut forwarded = Vec::new();
    let mut at_home = Vec::new();
    for (route, body, through_other) in phases {
        let answers = futures::stream::iter(placed.iter())
            .map(|(order, home)| {
                let body = body.clone();
                async move {
                    let is_eu = home == "eu";
                    let via = if is_eu == through_other { us_ref } else { eu_ref };
                    let path = format!("/orders/{order}/{route}");
                    let started = Instant::now();
                    let (status, answer, answered_by) = via.post(&path, body).await;
                    (home, path, status, answer, answered_by, started.elapsed())
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for (home, path, status, answer, answered_by, took) in answers {
            assert_eq!(status, 202, "{path}: {answer}");
            assert_eq!(answer["region"], home.as_str(), "{path}");
            if through_other {
                assert_eq!(answered_by.as_deref(), Some(home.as_str()), "{path} answered by its home");
                forwarded.push(took);
            } else {
                assert_eq!(answered_by, None, "{path} answered where it was sent");
                at_home.push(took);
            }
        }
    }
    killer.join().expect("the mirror killer");
    let (placing_p, forwarded, at_home) =
        (percentiles(&mut direct), percentiles(&mut forwarded), percentiles(&mut at_home));
    eprintln!(
        "regions: {} orders placed in {placing:?} (p50 {:?} p99 {:?}); {} payments and shipments through the other \
         region's checkout p50 {:?} p99 {:?}; {} shipments through the home's own p50 {:?} p99 {:?}; \
         MirrorMaker 2 SIGKILLed {MIRROR_KILLS} times",
        placed.len(),
        placing_p.0,
        placing_p.1,
        placed.len() * 2,
        forwarded.0,
        forwarded.1,
        placed.len(),
        at_home.0,
        at_home.1
    );

    // A write for an order whose home cannot be reached appends nothing anywhere.
    let nowhere = schemas::Region::parse("ap").expect("region").order_id(*uuid::Uuid::new_v4().as_bytes());
    let (status, answer, _) = eu
        .post(
            &format!("/orders/{nowhere}/payments"),
            serde_json::json!({"status": "captured", "amount_minor": 1, "provider_ref": "p"}),
        )
        .await;
    assert_eq!((status, answer["error"].as_str()), (503, Some("home_region_unavailable")), "{answer}");

    // Each region's log holds its own orders' events only, each once.
    for region in regions {
        let events = events_of(&region.kafka, &topic).await;
        let mut ids = std::collections::BTreeSet::new();
        for event in &events {
            let order = event.order_id().expect("an order event");
            assert_eq!(
                placed.get(&order).map(String::as_str),
                Some(region.name.as_str()),
                "{order} in {}'s log",
                region.name
            );
            assert!(ids.insert(event.envelope().event_id), "{:?} appended twice", event.envelope().event_id);
        }
        assert_eq!(events.len(), ORDERS_PER_REGION * 4, "{}: placed, paid, packed, shipped", region.name);
    }

    // Every order, with its home, in both regions' views; the views equal.
    for region in regions {
        region.processes.as_ref().expect("processes").settle(&region.store, &[]).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (a, b) = (eu.store.reads().snapshot().await.expect("eu"), us.store.reads().snapshot().await.expect("us"));
        let complete = |s: &projections::store::Snapshot| {
            s.payments.len() == placed.len()
                && s.payments.iter().all(|p| p.status.as_str() == "captured")
                && s.fulfilment.iter().filter(|f| f.status.as_str() == "shipped").count() == placed.len()
                && s.inventory_levels.len() == 2
                && s.inventory_levels.iter().all(|l| l.shipped == ORDERS_PER_REGION as i64 && l.reserved == 0)
                // A pool's newest level can be applied before older decisions about other
                // orders (they are keyed by order, on other partitions): wait for every row.
                && s.inventory_orders.len() == placed.len()
                && s.inventory_orders.iter().all(|o| o.status.as_str() == "shipped")
        };
        if complete(&a) && complete(&b) {
            common::assert_same_projection(&b, &a, "us against eu");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "views incomplete: eu {} payments, us {} payments, levels eu {:?} us {:?}",
            a.payments.len(),
            b.payments.len(),
            a.inventory_levels,
            b.inventory_levels
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The views' `region` column names each order's home, in both regions.
    for region in regions {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&region.database_url).await.expect("database");
        for view in ["order_payments", "order_fulfilment", "order_history", "inventory_reservations"] {
            let rows: Vec<(String, Option<String>)> =
                sqlx::query_as(&format!("SELECT order_id, region FROM {view}")).fetch_all(&mut conn).await.expect(view);
            let homes: BTreeMap<uuid::Uuid, String> =
                rows.into_iter().map(|(id, r)| (id.parse().expect("uuid"), r.unwrap_or_default())).collect();
            assert_eq!(homes, placed, "{view} in {}", region.name);
        }
    }
    // Each order's history the same in both regions (copies MirrorMaker 2 made twice were
    // applied once), and the duplicates the mirror made.
    let mut histories = Vec::new();
    for region in regions {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&region.database_url).await.expect("database");
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT order_id, event_id, kind FROM order_history_events ORDER BY order_id, occurred_at_us, event_id",
        )
        .fetch_all(&mut conn)
        .await
        .expect("history");
        histories.push(rows);
    }
    assert_eq!(histories[0].len(), histories[1].len(), "history rows in eu and us");
    assert!(histories[0] == histories[1], "every order's event sequence is the same in both regions");
    for (from, into) in [(&eu, &us), (&us, &eu)] {
        let copy = events_of(&into.kafka, &from.name.mirrored(&topic)).await;
        let distinct: std::collections::BTreeSet<uuid::Uuid> = copy.iter().map(|e| e.envelope().event_id).collect();
        eprintln!(
            "regions: {}'s copy in {} holds {} records, {} of them duplicates MirrorMaker 2 made; applied once",
            from.name,
            into.name,
            copy.len(),
            copy.len() - distinct.len()
        );
    }
    copies_made_twice_are_applied_once(&us, &eu.name, &topic).await;
    refuses_an_append_about_another_regions_order(&us, &placed, &topic).await;
    read_your_writes_across_regions(&eu, &us, &topic).await;

    // An order shipping to the US, placed at eu's checkout, is placed in us.
    let body = serde_json::json!({"customer_id": "c-us", "currency": "USD",
        "lines": [{"sku": "SKU-G", "quantity": 1, "unit_price_minor": 1000}], "ship_to": {"country": "US"}});
    let (status, answer, answered_by) = eu.post("/orders", body).await;
    assert_eq!((status, answered_by.as_deref(), answer["region"].as_str()), (202, Some("us"), Some("us")), "{answer}");
    let id: uuid::Uuid = answer["order_id"].as_str().expect("order id").parse().expect("uuid");
    assert_eq!(schemas::Region::home_of(&id).map(|r| r.to_string()).as_deref(), Some("us"));
    eu.stop().await;
    us.stop().await;
}

/// What MirrorMaker 2 does after a crash (copies again what it copied since its last
/// offset commit), made certain: records of `source`'s copy in `region` appended to it a
/// second time, on their partitions, with their keys and bytes. Every view stays as
/// it was: each copy is recognised by its event id.
async fn copies_made_twice_are_applied_once(region: &Region, source: &schemas::Region, topic: &str) {
    let copy = source.mirrored(topic);
    let before = region.store.reads().snapshot().await.expect("snapshot");
    let total: i64 = common::log_ends(&region.kafka, &copy).await.values().sum();
    let (kafka, name) = (region.kafka.clone(), copy.clone());
    let records =
        tokio::task::spawn_blocking(move || common::read_topic(&kafka, &name, total as usize)).await.expect("reader");
    let producer: FutureProducer = region.kafka.client_config().create().expect("producer");
    let again: Vec<_> = records.iter().step_by(7).take(300).collect();
    for record in &again {
        let mut twice = FutureRecord::to(&copy).partition(record.partition).payload(&record.payload);
        if let Some(key) = &record.key {
            twice = twice.key(key);
        }
        producer.send(twice, Duration::from_secs(10)).await.expect("appended again");
    }
    for kind in projections::ProjectionKind::ALL {
        let group = projections::registry::mirror_group(&region.store.group(kind), source);
        for own in projections::registry::GroupKind::from(kind).topics(topic) {
            common::wait_caught_up(&region.store, &region.kafka, &group, &source.mirrored(&own)).await;
        }
    }
    let after = region.store.reads().snapshot().await.expect("snapshot");
    common::assert_same_projection(&after, &before, "after copies appended twice");
    eprintln!("regions: {} records of {copy} appended a second time: applied once", again.len());
}

/// A writer that bypasses the checkout and appends to us's log an event about an order
/// homed in eu: us's readers refuse it (recorded, resolved, holding nothing back), and
/// the order's row stays as its home's log made it.
async fn refuses_an_append_about_another_regions_order(
    us: &Region,
    placed: &BTreeMap<uuid::Uuid, String>,
    topic: &str,
) {
    let (order, _) = placed.iter().find(|(_, home)| *home == "eu").expect("an eu order");
    let forged = schemas::samples::readdressed(schemas::samples::sample(schemas::EventKind::PaymentFailed), *order);
    let payload = schemas::Codec::builtin().encode(&forged).expect("encode");
    let producer: FutureProducer = us.kafka.client_config().create().expect("producer");
    let key = forged.key();
    let record = FutureRecord::to(topic).key(&key).payload(&payload);
    producer.send(record, Duration::from_secs(10)).await.expect("us's log takes it");
    let group = us.store.group(projections::ProjectionKind::Payment);
    common::wait_caught_up(&us.store, &us.kafka, &group, topic).await;
    let recorded = us.store.reads().list_dead_letters_with(Some(&group), None, false, 100).await.expect("dead letters");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].status, projections::store::DeadLetterStatus::Skipped, "{recorded:?}");
    assert!(recorded[0].reason.contains("homed in region eu"), "{recorded:?}");
    let payments = us.store.reads().snapshot().await.expect("snapshot").payments;
    let row = payments.iter().find(|p| p.order_id == *order).expect("the order's row");
    assert_eq!(row.status.as_str(), "captured", "the forged failure changed nothing");
}

/// Places an order in `eu` and reads it in `us` with the position eu answered.
async fn place_in_eu(eu: &Region, i: usize) -> (uuid::Uuid, String) {
    let body = serde_json::json!({"customer_id": format!("ryw-{i}"), "currency": "EUR",
        "lines": [{"sku": "SKU-G", "quantity": 1, "unit_price_minor": 1000}], "ship_to": {"country": "DE"}});
    let (status, answer, _) = eu.post("/orders", body).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["order_id"].as_str().expect("order id").parse().expect("uuid");
    let after = answer["after"].as_str().expect("after").to_string();
    assert!(after.starts_with("eu:"), "a regional position names its region: {after}");
    (id, after)
}

/// Writes in eu read in us with their positions: never a stale answer; with the mirror
/// stopped, `503 not_replicated`; once it runs again, the same positions are answered.
async fn read_your_writes_across_regions(eu: &Region, us: &Region, topic: &str) {
    let eu_region = eu.name.clone();
    let api = common::ServeApi::spawn_in_region(
        &us.kafka,
        &us.store,
        topic,
        Duration::from_secs(10),
        &us.name,
        vec![eu_region.clone()],
    )
    .await;
    const WRITES: usize = 2_000;
    let started = Instant::now();
    let api_ref = &api;
    let reads = futures::stream::iter(0..WRITES)
        .map(|i| async move {
            let (id, after) = place_in_eu(eu, i).await;
            let (status, view) = api_ref.get(&format!("/orders/{id}?after={after}")).await;
            (id, status, view)
        })
        .buffer_unordered(CONCURRENCY * 2)
        .collect::<Vec<_>>()
        .await;
    let stale: Vec<_> =
        reads.iter().filter(|(id, status, view)| *status != 200 || view["order_id"] != id.to_string()).collect();
    assert!(
        stale.is_empty(),
        "{} of {WRITES} reads in us were not answered with the write: {:?}",
        stale.len(),
        stale.first()
    );
    eprintln!(
        "regions: {WRITES} writes in eu each read once in us with its position in {:?}: 0 stale",
        started.elapsed()
    );

    // Positions of eu's log the mirror has not copied: 503 not_replicated, never stale.
    kill_mirror();
    let short = common::ServeApi::spawn_in_region(
        &us.kafka,
        &us.store,
        topic,
        Duration::from_secs(2),
        &us.name,
        vec![eu_region],
    )
    .await;
    let mut pending = Vec::new();
    for i in 0..20 {
        pending.push(place_in_eu(eu, WRITES + i).await);
    }
    let short_ref = &short;
    let answers = futures::future::join_all(
        pending.iter().map(|(id, after)| async move { short_ref.get(&format!("/orders/{id}?after={after}")).await }),
    )
    .await;
    for (status, answer) in answers {
        assert_eq!((status, answer["error"].as_str()), (503, Some("not_replicated")), "{answer}");
    }
    // MirrorMaker 2 again: what it had not copied arrives, and the same positions are answered.
    regions();
    let deadline = Instant::now() + Duration::from_secs(120);
    for (id, after) in pending {
        loop {
            let (status, view) = api.get(&format!("/orders/{id}?after={after}")).await;
            if status == 200 {
                assert_eq!(view["order_id"].as_str(), Some(id.to_string().as_str()), "{view}");
                break;
            }
            assert_eq!(status, 503, "{view}");
            assert!(Instant::now() < deadline, "{id} not readable in us after the mirror resumed: {view}");
        }
    }
}

/// Region eu as the operator runs it: `orderflow checkout` and one `orderflow consume`
/// per group, as processes that a SIGKILL ends.
pub(crate) struct ProcessRegion {
    pub(crate) url: String,
    pub(crate) env: Vec<(String, String)>,
    port: u16,
    /// Each process, by what it runs (`checkout` or the group it consumes for).
    children: Vec<(String, common::Child)>,
}

impl ProcessRegion {
    pub(crate) fn new(
        name: &str,
        brokers: &str,
        database_url: &str,
        topic: &str,
        other: (&str, &str),
    ) -> ProcessRegion {
        Self::on_port(common::free_port(), name, brokers, database_url, topic, other)
    }

    /// The region with its checkout on `port` (known to the other region beforehand).
    pub(crate) fn on_port(
        port: u16,
        name: &str,
        brokers: &str,
        database_url: &str,
        topic: &str,
        other: (&str, &str),
    ) -> ProcessRegion {
        let env = [
            ("ORDERFLOW_BROKERS", brokers),
            ("ORDERFLOW_DATABASE_URL", database_url),
            ("ORDERFLOW_TOPIC", topic),
            ("ORDERFLOW_GROUP_PREFIX", &common::fresh_group_prefix()),
            ("ORDERFLOW_REGION", name),
            ("ORDERFLOW_MIRROR_REGIONS", other.0),
            ("ORDERFLOW_REGION_CHECKOUTS", &format!("{}={}", other.0, other.1)),
            ("ORDERFLOW_AUTH_TOKENS_FILE", &common::tokens_file()),
            ("ORDERFLOW_SESSION_TIMEOUT", "6s"),
            ("ORDERFLOW_MAX_POLL_INTERVAL", "10s"),
            ("ORDERFLOW_PAYMENT_TIMEOUT", "30m"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
        ProcessRegion { url: format!("http://127.0.0.1:{port}"), env, port, children: Vec::new() }
    }

    /// Starts its checkout and members, and waits until the checkout answers.
    pub(crate) async fn start(&mut self) {
        self.start_with(&["order-process", "stock", "inventory", "payment", "fulfilment", "history"]).await;
    }

    /// Starts its checkout and a member of each group in `groups`, and waits until the
    /// checkout answers.
    pub(crate) async fn start_with(&mut self, groups: &[&str]) {
        let listen = format!("127.0.0.1:{}", self.port);
        let checkout = self.spawn(&["checkout", "--listen", &listen]);
        self.children.push(("checkout".to_string(), checkout));
        for group in groups {
            let member = self.spawn(&["consume", group]);
            self.children.push((group.to_string(), member));
        }
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !client.get(format!("{}/readyz", self.url)).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "the checkout at {} did not become ready", self.url);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILLs every process of the region.
    pub(crate) fn kill(&mut self) {
        self.children.clear();
    }

    /// SIGKILLs the member of `group` and starts another in its place.
    pub(crate) fn kill_and_restart(&mut self, group: &str) {
        let at = self.children.iter().position(|(g, _)| g == group).unwrap_or_else(|| panic!("no {group} member"));
        drop(self.children.remove(at));
        let member = self.spawn(&["consume", group]);
        self.children.push((group.to_string(), member));
    }

    fn spawn(&self, args: &[&str]) -> common::Child {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        common::Child::spawn(args, &env)
    }
}

/// How many orders later an order is paid.
const PAYMENT_DELAY_ORDERS: usize = 30;

/// What a client saw: orders accepted (with the region that holds them), the payments
/// it could not make yet, and the answers it counted.
#[derive(Default)]
struct Shopper {
    accepted: BTreeMap<uuid::Uuid, String>,
    /// Event ids eu acknowledged, with when.
    eu_acknowledged: Vec<(uuid::Uuid, Instant)>,
    unpaid: Vec<uuid::Uuid>,
    /// Orders placed, in order, not yet paid for.
    to_pay: std::collections::VecDeque<uuid::Uuid>,
    /// Placements eu may or may not hold (Idempotency-Key, body).
    in_doubt: Vec<(String, serde_json::Value)>,
    home_unavailable: usize,
    /// The first order placed in us because eu could not be reached: how long from trying
    /// eu to us's 202.
    first_failover: Option<Duration>,
    sequence: usize,
}

impl Shopper {
    /// Places one order, in eu when eu's checkout can be reached, else in us; a request
    /// that reached eu without an answer is retried in eu (through us, with the region
    /// header), never placed again elsewhere. Then pays it through us's checkout.
    async fn shop(&mut self, client: &reqwest::Client, eu_url: &str, us: &Region) {
        self.sequence += 1;
        let body = serde_json::json!({"customer_id": format!("c-{}", self.sequence), "currency": "EUR",
            "lines": [{"sku": "SKU-O", "quantity": 1, "unit_price_minor": 1000}], "ship_to": {"country": "DE"}});
        let key = format!("outage-{}", self.sequence);
        let attempt = Instant::now();
        let sent = client.post(format!("{eu_url}/orders")).header("idempotency-key", &key).json(&body).send().await;
        let answer = match sent {
            Ok(response) if response.status().as_u16() == 202 => Some(response.json::<serde_json::Value>().await.ok()),
            // Reached eu and answered otherwise, or reached it and lost the answer: eu may
            // hold it. Its retry goes to eu (through us), not a new order.
            Ok(_) => None,
            Err(e) if !e.is_connect() => None,
            Err(_) => {
                // Nothing reached eu: a new order in us.
                let (status, answer, _) = us.post("/orders", body.clone()).await;
                assert_eq!(status, 202, "us accepts new orders while eu is down: {answer}");
                self.first_failover.get_or_insert_with(|| attempt.elapsed());
                Some(Some(answer))
            }
        };
        let Some(answer) = answer else {
            // Retried once eu is back: until then nobody can tell whether eu holds it.
            self.in_doubt.push((key, body));
            return;
        };
        let answer = answer.expect("a 202 body");
        self.record(&answer);
        // Paid a while after being placed, like a shop's customers: some of eu's orders
        // are paid while eu is down.
        self.to_pay.push_back(answer["order_id"].as_str().expect("order id").parse().expect("uuid"));
        if self.to_pay.len() > PAYMENT_DELAY_ORDERS {
            let order = self.to_pay.pop_front().expect("queued");
            self.pay(us, order).await;
        }
    }

    fn record(&mut self, answer: &serde_json::Value) {
        let id: uuid::Uuid = answer["order_id"].as_str().expect("order id").parse().expect("uuid");
        let region = answer["region"].as_str().expect("region").to_string();
        if region == "eu" {
            let event_id = answer["event_id"].as_str().expect("event id").parse().expect("uuid");
            self.eu_acknowledged.push((event_id, Instant::now()));
        }
        self.accepted.insert(id, region);
    }

    /// Retries a placement that may be in eu's log, through us with `Orderflow-Region: eu`,
    /// until eu answers it.
    async fn retry_in_eu(&mut self, us: &Region, key: &str, body: &serde_json::Value) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let response = us
                .client
                .post(format!("{}/orders", us.url))
                .header("idempotency-key", key)
                .header(producers::checkout::regions::REGION_HEADER, "eu")
                .json(body)
                .send()
                .await
                .expect("us answers");
            let status = response.status().as_u16();
            let answer: serde_json::Value = response.json().await.unwrap_or_default();
            if status == 202 {
                self.record(&answer);
                return;
            }
            assert_eq!(status, 503, "{answer}");
            assert!(Instant::now() < deadline, "eu never answered a retried placement");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Pays through us's checkout (forwarded to eu for eu's orders); eu's, while it is
    /// down, answer 503 home_region_unavailable and are paid later.
    async fn pay(&mut self, us: &Region, order: uuid::Uuid) {
        let body = serde_json::json!({"status": "captured", "amount_minor": 1000, "provider_ref": "p"});
        let (status, answer, _) = us.post(&format!("/orders/{order}/payments"), body).await;
        match (status, answer["error"].as_str()) {
            (202, _) => {}
            (503, Some("home_region_unavailable")) => {
                self.home_unavailable += 1;
                self.unpaid.push(order);
            }
            other => panic!("paying {order}: {other:?} {answer}"),
        }
    }
}

/// Region eu's broker, checkout and members SIGKILLed under load, then back after 60 s:
/// new orders go to us meanwhile, writes for eu's orders are refused there (503, nothing
/// appended in us), and in the end every order either region acknowledged is in both
/// regions' views once, paid, and no pool oversold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_down_for_a_minute_loses_doubles_and_oversells_nothing() {
    common::init_logs();
    let _mirror = MIRROR.lock().await;
    let exports = regions();
    let brokers_of = |r: &str| exports[&format!("ORDERFLOW_REGION_{}_BROKERS", r.to_uppercase())].clone();
    let (eu_kafka, us_kafka) = (KafkaSettings::new(brokers_of("eu")), KafkaSettings::new(brokers_of("us")));
    let topic = fresh_topic_in_both(&eu_kafka, &us_kafka, "outage", 3).await;
    let us_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let us_url = format!("http://{}", us_listener.local_addr().expect("addr"));
    let eu_database = common::fresh_database().await;
    let mut eu = ProcessRegion::new("eu", &brokers_of("eu"), &eu_database, &topic, ("us", &us_url));
    let us = Region::open("us", "eu", KafkaSettings::new(brokers_of("us")), &topic, us_listener, &eu.url).await;
    eu.start().await;
    let client = orderflow::load::http_client_with(Some(&common::token(common::ALL_SCOPES)));
    for url in [&eu.url, &us.url] {
        let body = serde_json::json!({"warehouse": "W-1", "delta": 100_000, "reason": "received"});
        let response =
            client.post(format!("{url}/inventory/SKU-O/adjustments")).json(&body).send().await.expect("stock");
        assert_eq!(response.status().as_u16(), 202);
    }

    let mut shopper = Shopper::default();
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        shopper.shop(&client, &eu.url, &us).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }

    // eu goes: its broker, checkout and members, at once.
    let broker_pid = local_state().join("kafka-region-eu/node-1.pid");
    let pid = std::fs::read_to_string(&broker_pid).expect("eu broker's pid file");
    let killed_at = Instant::now();
    assert!(std::process::Command::new("kill").args(["-9", pid.trim()]).status().expect("kill").success());
    eu.kill();
    // What eu acknowledged that us did not hold when eu went (with MirrorMaker 2's copy).
    let acknowledged: std::collections::BTreeSet<uuid::Uuid> =
        shopper.eu_acknowledged.iter().map(|(id, _)| *id).collect();
    let copied: std::collections::BTreeSet<uuid::Uuid> =
        events_of(&us.kafka, &format!("eu.{topic}")).await.iter().map(|e| e.envelope().event_id).collect();
    let rpo = acknowledged.difference(&copied).count();

    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        shopper.shop(&client, &eu.url, &us).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let failover = shopper.first_failover;
    let outage_seen = killed_at.elapsed();

    // eu comes back.
    regions();
    eu.start().await;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        shopper.shop(&client, &eu.url, &us).await;
    }
    for (key, body) in std::mem::take(&mut shopper.in_doubt) {
        shopper.retry_in_eu(&us, &key, &body).await;
    }
    let mut unpaid = std::mem::take(&mut shopper.unpaid);
    unpaid.extend(std::mem::take(&mut shopper.to_pay));
    let deadline = Instant::now() + Duration::from_secs(120);
    for order in unpaid {
        loop {
            let body = serde_json::json!({"status": "captured", "amount_minor": 1000, "provider_ref": "p"});
            let (status, answer, _) = us.post(&format!("/orders/{order}/payments"), body).await;
            if status == 202 {
                break;
            }
            assert!(Instant::now() < deadline, "eu's order {order} cannot be paid after eu is back: {answer}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let eu_orders = shopper.accepted.values().filter(|r| *r == "eu").count();
    let us_orders = shopper.accepted.len() - eu_orders;
    eprintln!(
        "outage: {} orders ({eu_orders} in eu, {us_orders} in us), failover to us {failover:?}, {} writes for eu's orders \
         answered 503 home_region_unavailable, RPO {rpo} record(s) eu acknowledged that us did not hold, eu down {outage_seen:?}",
        shopper.accepted.len(),
        shopper.home_unavailable
    );
    assert!(us_orders > 0 && failover.is_some(), "new orders went to us while eu was down");
    assert!(shopper.home_unavailable > 0, "writes for eu's orders were refused while eu was down");

    // us's log holds only us's orders: nothing of eu's was appended there.
    for event in events_of(&us.kafka, &topic).await {
        let order = event.order_id().expect("order event");
        assert_eq!(shopper.accepted.get(&order).map(String::as_str), Some("us"), "{order} on us's log");
    }
    // Every acknowledged order in us's views (lost 0), once (doubled 0), paid; no pool oversold.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let snapshot = us.store.reads().snapshot().await.expect("us views");
        let ids: std::collections::BTreeSet<uuid::Uuid> = snapshot.payments.iter().map(|p| p.order_id).collect();
        let wanted: std::collections::BTreeSet<uuid::Uuid> = shopper.accepted.keys().copied().collect();
        assert!(ids.is_subset(&wanted), "orders nobody acknowledged: {:?}", ids.difference(&wanted).next());
        let paid = snapshot.payments.iter().filter(|p| p.status.as_str() == "captured").count();
        assert!(
            snapshot.inventory_levels.iter().all(|l| l.available >= 0),
            "oversold: {:?}",
            snapshot.inventory_levels
        );
        if ids == wanted && paid == wanted.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "us's views lack {} of {} acknowledged orders, {paid} paid",
            wanted.difference(&ids).count(),
            wanted.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // eu's log: every event once.
    let eu_events = events_of(&KafkaSettings::new(brokers_of("eu")), &topic).await;
    let distinct: std::collections::BTreeSet<uuid::Uuid> = eu_events.iter().map(|e| e.envelope().event_id).collect();
    assert_eq!(distinct.len(), eu_events.len(), "an event appended twice in eu");
    eu.kill();
    us.stop().await;
}

/// Partitions added to eu's topics while orders are placed there: MirrorMaker 2 adds them
/// to the copies, us's mirror groups take them up, and every order placed in eu, on an old
/// partition or a new one, shows in us's views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_in_one_region_are_mirrored_and_read_in_the_other_and_nothing_is_skipped() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::client::DefaultClientContext;
    common::init_logs();
    let _mirror = MIRROR.lock().await;
    let exports = regions();
    let kafka_of =
        |r: &str| KafkaSettings::new(exports[&format!("ORDERFLOW_REGION_{}_BROKERS", r.to_uppercase())].clone());
    let (eu_kafka, us_kafka) = (kafka_of("eu"), kafka_of("us"));
    let topic = fresh_topic_in_both(&eu_kafka, &us_kafka, "growth", 2).await;
    // eu: its checkout alone (the copy of its orders topic is what us reads).
    let eu_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let eu_url = format!("http://{}", eu_listener.local_addr().expect("addr"));
    let publisher = producers::publisher::PublisherConfig {
        topic: topic.clone(),
        deadline: Duration::from_secs(5),
        linger_ms: 1,
        codec: schemas::Codec::builtin(),
    };
    let eu_region = schemas::Region::parse("eu").expect("region");
    let state = producers::checkout::AppState::connect(
        &eu_kafka,
        &common::fresh_database().await,
        publisher,
        common::test_access(),
    )
    .await
    .expect("checkout")
    .in_region(
        producers::checkout::regions::Regions::new(eu_region, BTreeMap::new(), Duration::from_secs(8))
            .expect("regions"),
    );
    let server = tokio::spawn(async move {
        let _ = producers::checkout::run(eu_listener, state, std::future::pending()).await;
    });
    let us_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let us = Region::open("us", "eu", us_kafka.clone(), &topic, us_listener, &eu_url).await;

    let client = orderflow::load::http_client_with(Some(&common::token(common::ALL_SCOPES)));
    let mut placed: BTreeMap<uuid::Uuid, i64> = BTreeMap::new();
    let admin: AdminClient<DefaultClientContext> = eu_kafka.client_config().create().expect("admin");
    let started = Instant::now();
    let mut grown = false;
    while started.elapsed() < Duration::from_secs(40) {
        if !grown && started.elapsed() > Duration::from_secs(5) {
            let more: Vec<String> = schemas::pipeline_topics(&topic);
            let requests: Vec<NewPartitions> = more.iter().map(|t| NewPartitions::new(t, 4)).collect();
            let results = admin.create_partitions(&requests, &AdminOptions::new()).await.expect("create partitions");
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            grown = true;
        }
        let body = serde_json::json!({"customer_id": "c", "currency": "EUR",
            "lines": [{"sku": "SKU-P", "quantity": 1, "unit_price_minor": 1000}], "ship_to": {"country": "DE"}});
        let (status, answer) =
            orderflow::load::post_json(&client, &format!("{eu_url}/orders"), &body, None).await.expect("http");
        assert_eq!(status, 202, "{answer}");
        let id = answer["order_id"].as_str().expect("order id").parse().expect("uuid");
        placed.insert(id, answer["position"]["partition"].as_i64().expect("partition"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let on_new = placed.values().filter(|p| **p >= 2).count();
    assert!(on_new > 0, "the checkout wrote to the added partitions");
    let copy_partitions = {
        let (kafka, name) = (us_kafka.clone(), format!("eu.{topic}"));
        tokio::task::spawn_blocking(move || {
            infra::group_inspect::Inspector::new(&kafka, Duration::from_secs(5)).expect("inspector").partitions(&name)
        })
        .await
        .expect("inspector")
        .expect("partitions")
    };
    assert_eq!(copy_partitions.len(), 4, "the copy grew with its source");
    let ids: Vec<String> = placed.keys().map(uuid::Uuid::to_string).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let shown = us.store.reads().orders_shown(&ids).await.expect("us views");
        if shown.len() == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} orders placed in eu missing in us",
            ids.len() - shown.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "growth: {} orders placed in eu, {on_new} of them on the 2 partitions added under load; all in us's views",
        placed.len()
    );
    server.abort();
    us.stop().await;
}
