//! Two regions on one machine (`infra/local/up --regions eu,us`): a Kafka cluster and a
//! database per region, bridged by MirrorMaker 2 in both directions. What one region
//! appends reaches the other under `<region>.<topic>`, on the same partition, in the same
//! order, with its key and headers: what the read path of global distribution builds on.
use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use infra::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// The exports of `infra/local/up --regions eu,us`.
fn regions() -> BTreeMap<String, String> {
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
    let exports = regions();
    assert_eq!(exports["ORDERFLOW_REGIONS"], "eu,us");
    assert!(exports["ORDERFLOW_REGION_EU_DATABASE_URL"].ends_with("/orderflow_eu"), "{exports:?}");
    let eu = KafkaSettings::new(exports["ORDERFLOW_REGION_EU_BROKERS"].clone());
    let us = KafkaSettings::new(exports["ORDERFLOW_REGION_US_BROKERS"].clone());
    assert_ne!(eu.brokers, us.brokers);

    // A pipeline's topics in each region; records appended in both.
    let topic = orderflow::kit::fresh_topic(&eu, "regions", 3).await.expect("eu topics");
    let specs: Vec<infra::topics::TopicSpec> = schemas::pipeline_topics(&topic)
        .into_iter()
        .map(|name| infra::topics::TopicSpec { name, partitions: 3, replication_factor: None })
        .collect();
    infra::topics::create_topics(&us, &specs, Duration::from_secs(30)).await.expect("us topics");
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
