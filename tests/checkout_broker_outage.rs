//! With the broker gone the checkout answers 503 "outcome unknown" in bounded time, never
//! hangs, and recovers by itself when the broker returns.
mod common;

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
    // memory:// storage: this test needs no data to survive the restart, and tansu 0.6 with
    // sqlite storage sometimes comes back from a SIGKILL refusing every idempotent producer
    // (it drops the connection on InitProducerId), which no client can recover from.
    let mut broker = common::OwnBroker::start_in_memory();
    let kafka = KafkaSettings::new(broker.brokers());
    let topic = "orders".to_string();
    let spec = [TopicSpec { name: topic.clone(), partitions: 2, replication_factor: 1 }];
    create_topics(&kafka, &spec, Duration::from_secs(20)).await.expect("topic");
    let app = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(2)).await;
    let (status, _) = app.post("/orders", &order_body("before"), None).await;
    assert_eq!(status, 202);

    broker.kill();
    // The answer must come, and be a 503 saying the outcome is unknown. The bound is loose
    // (the publish deadline is 2 s): this proves "no hang", not a speed.
    let during =
        tokio::time::timeout(Duration::from_secs(20), app.post("/orders", &order_body("during"), Some("outage-1")))
            .await
            .expect("the checkout hung while the broker was down");
    assert_eq!(during.0, 503, "{}", during.1);
    assert_eq!(during.1["error"], json!("outcome_unknown"));
    let ready = tokio::time::timeout(Duration::from_secs(20), app.get("/readyz")).await.expect("readyz hung");
    assert_eq!(ready.0, 503);

    // The restarted broker is empty: re-create the topic as an operator would. tansu 0.6
    // sometimes comes back closing every connection of some clients; then it is restarted
    // again (at most three times). What this test proves is that the same checkout, without
    // a restart of its own, accepts again once a working broker is back.
    let mut accepted = None;
    for _attempt in 0..3 {
        broker.restart();
        if create_topics(&kafka, &spec, Duration::from_secs(10)).await.is_err()
            || !probe_produce(&kafka, &topic, 2).await
        {
            broker.kill();
            continue;
        }
        // The client retries with the same key, as the 503 told it to, until accepted.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let (status, answer) = app.post("/orders", &order_body("during"), Some("outage-1")).await;
            if status == 202 {
                accepted = Some(answer);
                break;
            }
            assert_eq!(status, 503, "{answer}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if accepted.is_some() {
            break;
        }
        broker.kill();
    }
    let accepted = accepted.expect("the checkout did not recover after three broker restarts");
    assert!(accepted["order_id"].is_string());
    assert_eq!(app.get("/readyz").await.0, 200);
    let (status, _) = app.post("/orders", &order_body("after"), None).await;
    assert_eq!(status, 202);
}

/// Whether a fresh idempotent producer can write one record to every partition within 10 s
/// (tansu has come back with one partition that never acknowledges).
async fn probe_produce(kafka: &KafkaSettings, topic: &str, partitions: i32) -> bool {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let Ok(producer) = kafka
        .client_config()
        .set("message.timeout.ms", "10000")
        .set("enable.idempotence", "true")
        .create::<FutureProducer>()
    else {
        return false;
    };
    for partition in 0..partitions {
        let record = FutureRecord::to(topic).partition(partition).key("probe").payload("probe");
        if producer.send(record, Duration::from_secs(10)).await.is_err() {
            return false;
        }
    }
    true
}
