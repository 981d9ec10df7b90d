//! orderflow on a real Apache Kafka cluster: Kafka's own tooling sees the offsets and lag
//! that `orderflow groups` shows; partitions added with Kafka's tool while the groups run
//! are taken over by the members; and on a three-node cluster, SIGKILL of the leader of a
//! busy partition during checkout load loses no accepted order.
use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use consumers::member::{run_member, MemberHandle};
use infra::KafkaSettings;
use orderflow::load::{self, LoadConfig};
use projections::store::Store;
use projections::ProjectionKind;
use serde_json::json;

fn load_config(target: &str, rate: u32, seconds: u64) -> LoadConfig {
    LoadConfig {
        target: target.to_string(),
        rate,
        duration: Duration::from_secs(seconds),
        workers: 12,
        skus: 5,
        show_progress: false,
        token: Some(common::token(common::ALL_SCOPES)),
        decisions: None,
        initial_stock: 0,
        limited_edition: None,
    }
}

/// One member per projection, in groups named after the test's topic.
fn start_groups(kafka: &KafkaSettings, topic: &str, store: &Store, tag: &str) -> Vec<(String, MemberHandle)> {
    ProjectionKind::ALL
        .iter()
        .map(|kind| {
            let group = format!("{}-{tag}-{topic}", kind.name());
            let member = run_member(common::member_config(*kind, topic, &group), kafka, store.clone()).expect("member");
            (group, member)
        })
        .collect()
}

/// `kafka-consumer-groups --describe` as (partition → (current offset, log end, lag)).
fn kafka_describe(brokers: &str, group: &str, topic: &str) -> BTreeMap<i64, (i64, i64, i64)> {
    let out = common::kafka_tool("consumer-groups", &["--bootstrap-server", brokers, "--describe", "--group", group]);
    out.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.len() >= 6 && cols[0] == group && cols[1] == topic)
        .map(|cols| {
            let n = |s: &str| s.parse::<i64>().unwrap_or_else(|_| panic!("not a number in {cols:?}"));
            (n(cols[2]), (n(cols[3]), n(cols[4]), n(cols[5])))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_groups_tool_shows_the_offsets_and_lag_orderflow_groups_shows() {
    let kafka = common::kafka();
    let topic = common::fresh_topic("tooling", 4).await;
    let app = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await;
    let database_url = common::fresh_database().await;
    let store = Store::connect(&database_url).await.expect("store");
    let groups = start_groups(&kafka, &topic, &store, "tool");
    let report = load::run(load_config(&app.base_url, 300, 3)).await;
    assert!(report.accepted > 200, "{}", report.summary());
    for ((group, _), kind) in groups.iter().zip(ProjectionKind::ALL) {
        common::wait_group_caught_up(&store, &kafka, kind, group, &topic).await;
    }
    for (_, member) in &groups {
        member.request_stop();
    }
    let names: Vec<String> = groups.iter().map(|(g, _)| g.clone()).collect();
    for (_, mut member) in groups {
        member.wait().await.expect("stop");
    }
    // With the groups stopped, more orders make a lag both sides must show.
    let more = load::run(load_config(&app.base_url, 300, 1)).await;
    assert!(more.accepted > 50, "{}", more.summary());

    let listed = common::run_orderflow(&["groups", "--json", "--topic", &topic, "--database-url", &database_url]);
    // One line per group and topic; the orders topic is where this test's load went (no
    // process runs here, so the decisions topic stays empty).
    let ours: BTreeMap<(String, String), serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("groups --json line"))
        .map(|g| {
            (
                (
                    g["group"].as_str().unwrap_or_default().to_string(),
                    g["topic"].as_str().unwrap_or_default().to_string(),
                ),
                g,
            )
        })
        .collect();
    let readers =
        names.iter().zip(ProjectionKind::ALL).filter(|(_, kind)| kind.reads().contains(&schemas::TopicRole::Orders));
    for (group, _) in readers {
        let theirs = kafka_describe(&kafka.brokers, group, &topic);
        let ours: BTreeMap<i64, (i64, i64, i64)> = ours[&(group.clone(), topic.clone())]["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|p| {
                let n = |k: &str| p[k].as_i64().unwrap_or_else(|| panic!("{k} missing in {p}"));
                (n("partition"), (n("next_offset"), n("log_end"), n("lag")))
            })
            .collect();
        assert_eq!(theirs.len(), 4, "{group}: Kafka's tool shows {theirs:?}");
        assert_eq!(ours, theirs, "{group}: orderflow groups vs kafka-consumer-groups");
        assert!(theirs.values().map(|(_, _, lag)| lag).sum::<i64>() > 0, "{group}: no lag to compare");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_with_kafkas_tool_while_groups_run_are_taken_over_and_views_stay_exact() {
    let kafka = common::kafka();
    let topic = common::fresh_topic("expand", 3).await;
    // The checkout's producer must see the new partitions too; the runbook restarts it,
    // here its metadata refresh is short instead.
    let mut checkout_kafka = kafka.clone();
    checkout_kafka.overrides.push(("topic.metadata.refresh.interval.ms".into(), "1000".into()));
    let app = common::TestCheckout::spawn(&checkout_kafka, &topic, Duration::from_secs(5)).await;
    let store = Store::connect(&common::fresh_database().await).await.expect("store");
    let groups = start_groups(&kafka, &topic, &store, "expand");

    // The runbook: stop publishing, let every group drain, add partitions, publish again.
    let before = load::run(load_config(&app.base_url, 300, 3)).await;
    assert!(before.accepted > 200, "{}", before.summary());
    for ((group, _), kind) in groups.iter().zip(ProjectionKind::ALL) {
        common::wait_group_caught_up(&store, &kafka, kind, group, &topic).await;
    }
    // Every topic of the pipeline: an order's facts and decisions share a partition number.
    for name in schemas::pipeline_topics(&topic) {
        common::kafka_tool(
            "topics",
            &["--bootstrap-server", &kafka.brokers, "--alter", "--topic", &name, "--partitions", "6"],
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while groups
        .iter()
        .zip(ProjectionKind::ALL)
        .any(|((_, m), kind)| m.stats.owned.lock().expect("owned").len() < 6 * kind.reads().len())
    {
        assert!(std::time::Instant::now() < deadline, "the members did not take the new partitions within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Long enough that a slow machine (the producer learning six leaders, every group
    // catching up at once) still places the orders this needs.
    let after = load::run(load_config(&app.base_url, 300, 8)).await;
    assert!(after.accepted > 300, "{}", after.summary());
    let ends = common::log_ends(&kafka, &topic).await;
    assert!(
        (3..6).all(|p| ends.get(&p).copied().unwrap_or(0) > 0),
        "nothing was published to the new partitions: {ends:?}"
    );
    for ((group, _), kind) in groups.iter().zip(ProjectionKind::ALL) {
        common::wait_group_caught_up(&store, &kafka, kind, group, &topic).await;
    }
    for (_, member) in groups {
        member.stop().await.expect("stop");
    }
    let reference = common::calm_rebuild(&kafka, &topic).await;
    common::assert_same_projection(
        &store.reads().snapshot().await.expect("snapshot"),
        &reference.reads().snapshot().await.expect("snapshot"),
        "after adding partitions",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_three_nodes_killing_the_leader_of_a_busy_partition_loses_no_accepted_order() {
    common::init_logs();
    let mut cluster = common::OwnCluster::start(3);
    let kafka = KafkaSettings::new(cluster.brokers());
    let topic = "orders".to_string();
    // Replication factor 3 and min.insync.replicas 2 are the cluster's defaults.
    let specs: Vec<infra::topics::TopicSpec> = schemas::pipeline_topics(&topic)
        .into_iter()
        .map(|name| infra::topics::TopicSpec { name, partitions: 3, replication_factor: None, configs: Vec::new() })
        .collect();
    infra::topics::create_topics(&kafka, &specs, Duration::from_secs(30)).await.expect("topics");
    let app = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await;
    let store = Store::connect(&common::fresh_database().await).await.expect("store");
    let groups = start_groups(&kafka, &topic, &store, "failover");

    // Clients that place orders and, on 503, retry with the same Idempotency-Key until
    // accepted (as the checkout tells them): every order they meant to place must end up
    // accepted once and projected once.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // (partition, when) of every acceptance so far, for the test to follow the failover.
    let acceptances = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(i64, std::time::Instant)>::new()));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let base = app.base_url.clone();
            let (stop, acceptances) = (stop.clone(), acceptances.clone());
            tokio::spawn(async move {
                let client = orderflow::load::http_client_with(Some(&common::token(common::ALL_SCOPES)));
                let mut accepted: Vec<(String, i64, i64)> = Vec::new();
                let mut retried = 0u32;
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("failover-{c}-{n}");
                    let body = json!({"customer_id": key, "currency": "EUR",
                        "lines": [{"sku": format!("SKU-{}", n % 4), "quantity": 1, "unit_price_minor": 500}],
                        "ship_to": {"country": "DE"}});
                    let deadline = std::time::Instant::now() + Duration::from_secs(90);
                    loop {
                        let url = format!("{base}/orders");
                        match orderflow::load::post_json(&client, &url, &body, Some(&key)).await {
                            Ok((202, answer)) => {
                                let position = &answer["position"];
                                accepted.push((
                                    answer["order_id"].as_str().expect("order id").to_string(),
                                    position["partition"].as_i64().expect("partition"),
                                    position["offset"].as_i64().expect("offset"),
                                ));
                                let partition = position["partition"].as_i64().expect("partition");
                                acceptances.lock().expect("acceptances").push((partition, std::time::Instant::now()));
                                break;
                            }
                            Ok((503 | 409, _)) | Err(_) => retried += 1,
                            Ok((status, answer)) => panic!("order {key}: {status} {answer}"),
                        }
                        assert!(std::time::Instant::now() < deadline, "order {key} was never accepted");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (accepted, retried)
            })
        })
        .collect();

    // The partition is busy: orders are flowing to every partition when its leader dies.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acceptances.lock().expect("acceptances").len() < 30 {
        assert!(std::time::Instant::now() < deadline, "the checkout accepted almost nothing before the kill");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = partition_leader(&kafka, &topic, 0);
    cluster.kill(leader);
    let killed_at = std::time::Instant::now();
    // The load goes on until the new leader of partition 0 has taken orders (and 5 s at least).
    let deadline = killed_at + Duration::from_secs(90);
    loop {
        let failed_over = acceptances.lock().expect("acceptances").iter().any(|(p, at)| *p == 0 && *at > killed_at);
        if failed_over && killed_at.elapsed() >= Duration::from_secs(5) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "partition 0 took no order within 90 s of its leader's death");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut accepted = Vec::new();
    let mut retried = 0;
    for client in clients {
        let (a, r) = client.await.expect("client");
        accepted.extend(a);
        retried += r;
    }
    assert_ne!(partition_leader(&kafka, &topic, 0), leader, "partition 0 has no new leader");

    // Every acknowledged position still holds the order it acknowledged.
    let records = common::read_topic(&kafka, &topic, accepted.len());
    let codec = schemas::Codec::builtin();
    let on_log: BTreeMap<(i64, i64), String> = records
        .iter()
        .filter_map(|r| {
            let event = codec.decode(&r.payload).ok()?;
            Some(((i64::from(r.partition), r.offset), event.order_id()?.to_string()))
        })
        .collect();
    for (order, partition, offset) in &accepted {
        assert_eq!(
            on_log.get(&(*partition, *offset)),
            Some(order),
            "accepted order {order} is not at {partition}:{offset}"
        );
    }

    // The groups kept running through the failover: each accepted order projected once.
    for ((group, _), kind) in groups.iter().zip(ProjectionKind::ALL) {
        common::wait_group_caught_up(&store, &kafka, kind, group, &topic).await;
    }
    for (_, member) in groups {
        member.stop().await.expect("stop");
    }
    let snapshot = store.reads().snapshot().await.expect("snapshot");
    let projected: BTreeSet<String> = snapshot.payments.iter().map(|p| p.order_id.to_string()).collect();
    let wanted: BTreeSet<String> = accepted.iter().map(|(o, _, _)| o.clone()).collect();
    assert_eq!(projected, wanted, "payment projection vs accepted orders ({retried} retries during the failover)");
    let reference = common::calm_rebuild(&kafka, &topic).await;
    common::assert_same_projection(&snapshot, &reference.reads().snapshot().await.expect("snapshot"), "after failover");
}

/// The node id leading `partition` of `topic` (nodes are numbered from 1).
fn partition_leader(kafka: &KafkaSettings, topic: &str, partition: i32) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = kafka.client_config().create().expect("client");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let leader = metadata.topics()[0].partitions().iter().find(|p| p.id() == partition).expect("partition").leader();
    usize::try_from(leader).expect("a leader")
}
