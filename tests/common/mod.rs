//! Helpers shared by the end-to-end tests: each test gets its own topic (and later its
//! own group and database) on the real broker named by `ORDERFLOW_BROKERS`.
#![allow(dead_code)]

use std::time::Duration;

use infra::topics::{create_topics, TopicSpec};
use infra::KafkaSettings;

/// The real broker. Tests of real paths never fall back to a mock: without a broker
/// they fail and say how to start one.
pub fn kafka() -> KafkaSettings {
    let brokers = std::env::var("ORDERFLOW_BROKERS")
        .expect("ORDERFLOW_BROKERS is not set: run `eval \"$(infra/local/up)\"` before the tests");
    KafkaSettings::new(brokers)
}

/// A fresh topic with a unique name, so tests never see each other's records.
pub async fn fresh_topic(prefix: &str, partitions: i32) -> String {
    let name = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
    let spec = TopicSpec {
        name: name.clone(),
        partitions,
        replication_factor: 1,
    };
    create_topics(&kafka(), &[spec], Duration::from_secs(20))
        .await
        .expect("create topic");
    name
}
