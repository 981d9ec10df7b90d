//! Appends events to the log: encode, produce with an idempotent producer (acks=all),
//! await the broker's acknowledgement within a deadline. Many publishes run concurrently;
//! librdkafka batches them.
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use schemas::{Codec, Event};
use serde::Serialize;

use crate::error::PublishError;
use crate::metrics as m;

/// Where an event was written: its partition and offset. Clients use it as a freshness
/// token ("show me the projections once they have passed this position").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

pub struct Publisher {
    producer: FutureProducer,
    codec: Codec,
    topic: String,
    deadline: Duration,
}

/// Settings for the checkout's producer.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub topic: String,
    /// How long a publish may take before the caller is told "outcome unknown".
    pub deadline: Duration,
    pub linger_ms: u32,
}

impl Publisher {
    pub fn new(
        kafka: &infra::KafkaSettings,
        config: PublisherConfig,
    ) -> Result<Self, PublishError> {
        // librdkafka keeps retrying a little longer than our deadline: a request we answered
        // 503 may still be written, which is why retries carry the same event id.
        let message_timeout = (config.deadline + Duration::from_secs(5))
            .as_millis()
            .to_string();
        let linger = config.linger_ms.to_string();
        let producer: FutureProducer = kafka
            .client_config_with(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("message.timeout.ms", &message_timeout),
                ("linger.ms", &linger),
                ("compression.type", "lz4"),
            ])
            .create()
            .map_err(|e| PublishError::Config(e.to_string()))?;
        Ok(Publisher {
            producer,
            codec: Codec::builtin(),
            topic: config.topic,
            deadline: config.deadline,
        })
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Appends one event keyed by [`Event::key`] and waits for the broker's ack.
    #[tracing::instrument(skip_all, fields(kind = ?event.kind(), event_id = %event.envelope().event_id))]
    pub async fn publish(&self, event: &Event) -> Result<Position, PublishError> {
        let payload = self
            .codec
            .encode(event)
            .map_err(|e| PublishError::Encode(e.to_string()))?;
        self.publish_encoded(&event.key(), &payload).await
    }

    /// Produces already-encoded bytes; the benchmark compares this path to a bare producer.
    pub async fn publish_encoded(
        &self,
        key: &str,
        payload: &[u8],
    ) -> Result<Position, PublishError> {
        let started = Instant::now();
        let _in_flight = m::InFlightProduce::start();
        let record = FutureRecord::to(&self.topic).key(key).payload(payload);
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| match e {
                KafkaError::MessageProduction(code) => PublishError::Rejected(code.to_string()),
                other => PublishError::Rejected(other.to_string()),
            })?;
        let outcome = tokio::time::timeout(self.deadline, delivery).await;
        m::record_produce_latency(started.elapsed());
        match outcome {
            Ok(Ok(Ok(delivered))) => Ok(Position {
                partition: delivered.partition,
                offset: delivered.offset,
            }),
            Ok(Ok(Err((e, _)))) => Err(PublishError::OutcomeUnknown(e.to_string())),
            Ok(Err(_canceled)) => Err(PublishError::OutcomeUnknown("producer shut down".into())),
            Err(_elapsed) => Err(PublishError::OutcomeUnknown(format!(
                "no acknowledgement within {:?}",
                self.deadline
            ))),
        }
    }

    /// Whether the broker answers a metadata request for our topic within `timeout`.
    pub async fn broker_reachable(&self, timeout: Duration) -> bool {
        let client = self.producer.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Waits for queued produces to be acknowledged, up to `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| PublishError::OutcomeUnknown(e.to_string()))?
            .map_err(|e| PublishError::OutcomeUnknown(e.to_string()))
    }
}
