//! With the broker gone the checkout answers 503 "outcome unknown" in bounded time, never
//! hangs, and recovers by itself when the broker returns.
use crate::common;

use std::time::Duration;

use infra::topics::{create_topics, TopicSpec};
use infra::KafkaSettings;
use serde_json::json;

fn order_body(customer: &str) -> serde_json::Value {
    json!({"customer_id": customer, "currency":"EUR",
           "lines":[{"sku":"SKU-1","quantity":1,"unit_price_minor":100}], "ship_to":{"country":"DE"}})
}

#[tokio::test]
async fn broker_outage_gives_bounded_503_and_recovers_when_the_broker_returns() {
    common::init_logs();
    // A broker of the test's own, so killing it disturbs no other test.
    let mut cluster = common::OwnCluster::start(1);
    let kafka = KafkaSettings::new(cluster.brokers());
    let topic = "orders".to_string();
    let spec = [TopicSpec { name: topic.clone(), partitions: 2, replication_factor: None, configs: Vec::new() }];
    create_topics(&kafka, &spec, Duration::from_secs(20)).await.expect("topic");
    let app = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(2)).await;
    let (status, before) = app.post("/orders", &order_body("before"), None).await;
    assert_eq!(status, 202, "{before}");

    cluster.kill(1);
    // The answer must come, and be a 503 saying the outcome is unknown. The bound is loose
    // (the publish deadline is 2 s): this proves "no hang", not a speed.
    let during =
        tokio::time::timeout(Duration::from_secs(20), app.post("/orders", &order_body("during"), Some("outage-1")))
            .await
            .expect("the checkout hung while the broker was down");
    assert_eq!(during.0, 503, "{}", during.1);
    assert_eq!(during.1["error"], json!("outcome_unknown"));
    // The first attempt may be in the log: its key now stands for that body alone.
    let (status, answer) = app.post("/orders", &order_body("someone else"), Some("outage-1")).await;
    assert_eq!((status, &answer["error"]), (422, &json!("idempotency_key_reused")), "{answer}");
    let ready = tokio::time::timeout(Duration::from_secs(20), app.get("/readyz")).await.expect("readyz hung");
    assert_eq!(ready.0, 503);

    // The same broker comes back with its log: SIGKILL ends the process, not the machine,
    // so what it acknowledged is still in the page cache and on disk.
    cluster.start_node(1);
    cluster.wait_for_brokers(1);
    // The client retries with the same key, as the 503 told it to, until accepted.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let accepted = loop {
        let (status, answer) = app.post("/orders", &order_body("during"), Some("outage-1")).await;
        if status == 202 {
            break answer;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(std::time::Instant::now() < deadline, "the checkout did not recover after the broker returned");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(accepted["order_id"].is_string());
    assert_eq!(app.get("/readyz").await.0, 200);
    let (status, _) = app.post("/orders", &order_body("after"), None).await;
    assert_eq!(status, 202);
    // The order accepted before the outage is still on the log where the 202 said.
    let records = common::read_topic(&kafka, &topic, 3);
    let at = (before["position"]["partition"].as_i64(), before["position"]["offset"].as_i64());
    assert!(
        records.iter().any(|r| (Some(i64::from(r.partition)), Some(r.offset)) == at),
        "the order accepted before the outage is gone from the log: {at:?}"
    );
}
