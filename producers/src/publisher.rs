//! Appends events to the log: encode, produce with an idempotent producer (acks=all),
//! await the broker's acknowledgement within a deadline. Many publishes run concurrently;
//! librdkafka batches them.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use infra::trace::{Step, StepKind};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use schemas::{Codec, Event, EPOCH_HEADER, EVENT_ID_HEADER, PRINCIPAL_HEADER, REQUEST_HEADER, TRACE_HEADER};
use serde::Serialize;

use crate::error::PublishError;
use crate::metrics as m;

/// Where an event was written: its topic, partition and offset. Clients use a position on
/// the orders topic as a freshness token ("show me the projections once they have passed
/// this position").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Position {
    /// The orders topic, or for a stock adjustment the stock topic.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (ms since the epoch) as the broker acknowledged it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<i64>,
}

/// The headers a record is appended with (each when known).
#[derive(Default, Clone, Copy)]
struct Headers<'a> {
    principal: Option<&'a str>,
    event_id: Option<&'a str>,
    request: Option<&'a str>,
    epoch: Option<&'a str>,
}

/// Consecutive failed publishes after which the producer is rebuilt.
const FAILURES_BEFORE_REBUILD: u32 = 3;
const REBUILD_INTERVAL: Duration = Duration::from_secs(5);

pub struct Publisher {
    /// The live producer and its generation. Rebuilt when it is stuck (see `recover`).
    producer: RwLock<(u64, FutureProducer)>,
    client_config: ClientConfig,
    /// A reader's settings, to find a record whose offset the acknowledgement lacked.
    reader_config: ClientConfig,
    consecutive_failures: AtomicU32,
    last_rebuild: Mutex<Option<Instant>>,
    codec: Codec,
    topic: String,
    deadline: Duration,
    /// This region and who writes which region's orders: an event about the order of a
    /// region this one took over goes out under that handover's epoch.
    ownership: std::sync::OnceLock<(schemas::Region, tokio::sync::watch::Receiver<schemas::Owners>)>,
}

/// Settings for the checkout's producer.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub topic: String,
    /// How long a publish may take before the caller is told "outcome unknown".
    pub deadline: Duration,
    pub linger_ms: u32,
    /// Frames events with the embedded manifest's ids or a schema registry's.
    pub codec: Codec,
}

impl Publisher {
    pub fn new(kafka: &infra::KafkaSettings, config: PublisherConfig) -> Result<Self, PublishError> {
        // librdkafka keeps retrying a little longer than our deadline: a request we answered
        // 503 may still be written, which is why retries carry the same event id.
        let client_config = kafka.idempotent_producer(
            config.deadline + Duration::from_secs(5),
            Duration::from_millis(config.linger_ms.into()),
        );
        let producer: FutureProducer = client_config.create().map_err(PublishError::Config)?;
        Ok(Publisher {
            producer: RwLock::new((0, producer)),
            client_config,
            reader_config: kafka.client_config(),
            consecutive_failures: AtomicU32::new(0),
            last_rebuild: Mutex::new(None),
            codec: config.codec,
            topic: config.topic,
            deadline: config.deadline,
            ownership: std::sync::OnceLock::new(),
        })
    }

    /// Follows the handovers `owners` sees, as region `here` (set once).
    pub fn follow_ownership(&self, here: schemas::Region, owners: tokio::sync::watch::Receiver<schemas::Owners>) {
        let _ = self.ownership.set((here, owners));
    }

    /// The epoch an event goes out under when its order's region has been handed over
    /// (another region's order this region writes now, or this region's own after it took
    /// them back); `None`: epoch 1, the home before any handover, no header.
    fn epoch_of(&self, event: &Event) -> Option<u32> {
        let (here, owners) = self.ownership.get()?;
        let home = schemas::Region::home_of(&event.order_id()?)?;
        owners.borrow().writes_as(here, &home).filter(|epoch| *epoch > 1)
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn current(&self) -> (u64, FutureProducer) {
        self.producer.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Appends one event keyed by [`Event::key`], with the principal that published it in
    /// the record's [`PRINCIPAL_HEADER`], and waits for the broker's ack.
    #[tracing::instrument(skip_all, fields(kind = ?event.kind(), event_id = %event.envelope().event_id))]
    pub async fn publish(&self, event: &Event, principal: &str) -> Result<Position, PublishError> {
        self.publish_with(event, principal, None).await
    }

    /// [`Publisher::publish`], with the request's [`REQUEST_HEADER`] when it came under an
    /// Idempotency-Key.
    #[tracing::instrument(skip_all, fields(kind = ?event.kind(), event_id = %event.envelope().event_id))]
    pub async fn publish_with(
        &self,
        event: &Event,
        principal: &str,
        request: Option<&str>,
    ) -> Result<Position, PublishError> {
        let payload = self.codec.encode(event).map_err(PublishError::Encode)?;
        let topic = schemas::topic_of(event.kind(), &self.topic);
        let event_id = event.envelope().event_id.to_string();
        let epoch = self.epoch_of(event).map(|e| e.to_string());
        let headers =
            Headers { principal: Some(principal), event_id: Some(&event_id), request, epoch: epoch.as_deref() };
        self.produce(&topic, &event.key(), &payload, headers).await
    }

    /// Produces already-encoded bytes to the orders topic; the benchmark compares this
    /// path to a bare producer.
    pub async fn publish_encoded(
        &self,
        key: &str,
        payload: &[u8],
        principal: Option<&str>,
    ) -> Result<Position, PublishError> {
        self.produce(&self.topic, key, payload, Headers { principal, ..Headers::default() }).await
    }

    async fn produce(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: Headers<'_>,
    ) -> Result<Position, PublishError> {
        let started = Instant::now();
        let _in_flight = m::InFlightProduce::start();
        let (generation, producer) = self.current();
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        let headers_event_id = headers.event_id.map(String::from);
        let mut step = produce_step(topic, key);
        let traceparent = step.as_ref().map(Step::traceparent);
        let headers = [
            (PRINCIPAL_HEADER, headers.principal),
            (EVENT_ID_HEADER, headers.event_id),
            (REQUEST_HEADER, headers.request),
            (EPOCH_HEADER, headers.epoch),
            (TRACE_HEADER, traceparent.as_deref()),
        ];
        if headers.iter().any(|(_, value)| value.is_some()) {
            let headers = headers
                .into_iter()
                .filter_map(|(key, value)| Some((key, value?)))
                .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value) }));
            record = record.headers(headers);
        }
        let delivery = match producer.send_result(record) {
            Ok(delivery) => delivery,
            // A producer refused its producer id is fatal before any record is sent.
            Err((e, _)) if self.refused(&e, &producer) => return Err(self.denied(e, generation, &producer)),
            Err((e, _)) => return Err(PublishError::Rejected(e)),
        };
        let outcome = tokio::time::timeout(self.deadline, delivery).await;
        m::record_produce_latency(started.elapsed());
        if let (Some(step), Ok(Ok(Ok(delivered)))) = (step.as_mut(), &outcome) {
            step.set("messaging.kafka.partition", i64::from(delivered.partition));
            step.set("messaging.kafka.offset", delivered.offset);
        } else if let Some(step) = step.as_mut() {
            step.fail("not acknowledged");
        }
        drop(step);
        let error = match outcome {
            Ok(Ok(Ok(delivered))) => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                let timestamp_ms = delivered.timestamp.to_millis();
                let mut offset = delivered.offset;
                if offset < 0 {
                    // Written, but the acknowledgement has no offset: a retry the new
                    // leader recognised as a duplicate of a batch it already held (after a
                    // failover). The answer must name where the record is: find it.
                    offset = self.locate(topic, delivered.partition, timestamp_ms, headers_event_id.as_deref()).await?;
                }
                return Ok(Position { topic: topic.to_string(), partition: delivered.partition, offset, timestamp_ms });
            }
            // Refused outright, or (an idempotent producer) refused its producer id, which
            // librdkafka turns into a fatal error that purges the queue.
            Ok(Ok(Err((e, _)))) if self.refused(&e, &producer) => return Err(self.denied(e, generation, &producer)),
            Ok(Ok(Err((e, _)))) => {
                PublishError::OutcomeUnknown { reason: "the broker reported an error", source: Some(e) }
            }
            Ok(Err(_canceled)) => PublishError::OutcomeUnknown { reason: "the producer shut down", source: None },
            Err(_elapsed) => {
                PublishError::OutcomeUnknown { reason: "no acknowledgement within the publish timeout", source: None }
            }
        };
        self.recover(generation, &producer);
        Err(error)
    }

    /// The offset of the record this publisher wrote at `timestamp_ms` in `partition`,
    /// carrying `event_id` (its header): from the first offset at that time, read forward.
    /// Not found (a record without an id, or gone): the outcome is reported unknown, and a
    /// retry with the same key writes the same event id again, which readers drop.
    async fn locate(
        &self,
        topic: &str,
        partition: i32,
        timestamp_ms: Option<i64>,
        event_id: Option<&str>,
    ) -> Result<i64, PublishError> {
        let unknown = || PublishError::OutcomeUnknown {
            reason: "the broker acknowledged the record without its offset, and it was not found",
            source: None,
        };
        let (Some(timestamp_ms), Some(event_id)) = (timestamp_ms, event_id) else { return Err(unknown()) };
        let (config, topic, event_id) = (self.reader_config.clone(), topic.to_string(), event_id.to_string());
        let found =
            tokio::task::spawn_blocking(move || find_record(config, &topic, partition, timestamp_ms, &event_id)).await;
        match found {
            Ok(Ok(Some(offset))) => Ok(offset),
            Ok(Ok(None)) | Err(_) => Err(unknown()),
            Ok(Err(e)) => Err(PublishError::OutcomeUnknown {
                reason: "the broker acknowledged the record without its offset, and looking it up failed",
                source: Some(e),
            }),
        }
    }

    /// Whether the broker refused this service's credentials or write ACL: outright, or (an
    /// idempotent producer) by refusing its producer id, which librdkafka turns into a
    /// fatal error that fails every record.
    fn refused(&self, error: &rdkafka::error::KafkaError, producer: &FutureProducer) -> bool {
        let denied = infra::access_check::access_denied;
        error.rdkafka_error_code().is_some_and(denied)
            || producer.client().fatal_error().is_some_and(|(code, _)| denied(code))
    }

    fn denied(&self, error: rdkafka::error::KafkaError, generation: u64, producer: &FutureProducer) -> PublishError {
        tracing::error!(error = &error as &dyn std::error::Error, topic = %self.topic,
            "The broker refuses this service's writes. Check its SASL user and its ACL on the topic.");
        // A fatal producer stays refused even after the ACL is fixed: replace it (at most
        // once per rebuild interval).
        self.recover(generation, producer);
        PublishError::Denied(error)
    }

    /// An idempotent producer can get stuck for good: a fatal error (fenced, sequence gap),
    /// or a cluster that lost its producer-id state (an unclean leader election, a cluster
    /// restored or replaced under the same address) and rejects every batch. After a fatal error, or several failures in a row, start a new
    /// producer (a new producer id), at most once per [`REBUILD_INTERVAL`]: if the broker
    /// is simply down the new one waits like the old one did. Requests in between got 503
    /// and are retried by their clients with the same event ids.
    fn recover(&self, generation: u64, producer: &FutureProducer) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let fatal = producer.client().fatal_error();
        if fatal.is_none() && failures < FAILURES_BEFORE_REBUILD {
            return;
        }
        let mut last = self.last_rebuild.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < REBUILD_INTERVAL) {
            return;
        }
        let fresh: FutureProducer = match self.client_config.create() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = &e as &dyn std::error::Error, "Could not rebuild the producer. Publishing stays broken until the broker accepts this client again.");
                return;
            }
        };
        let mut slot = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if slot.0 == generation {
            tracing::warn!(?fatal, failures, "The producer kept failing. It was replaced with a new one.");
            *slot = (generation + 1, fresh);
            *last = Some(Instant::now());
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the broker answers a metadata request for our topic within `timeout`.
    pub async fn broker_reachable(&self, timeout: Duration) -> bool {
        let (_, client) = self.current();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || client.client().fetch_metadata(Some(&topic), timeout).is_ok())
            .await
            .unwrap_or(false)
    }

    /// Waits for queued produces to be acknowledged, up to `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        let (_, producer) = self.current();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|_| PublishError::OutcomeUnknown { reason: "the flushing thread did not finish", source: None })?;
        flushed.map_err(|e| PublishError::OutcomeUnknown {
            reason: "queued records were not acknowledged",
            source: Some(e),
        })
    }
}

/// The offset of the record carrying `event_id` in its [`EVENT_ID_HEADER`], searched from
/// the first offset of `partition` at or after `timestamp_ms` to the partition's end.
fn find_record(
    config: ClientConfig,
    topic: &str,
    partition: i32,
    timestamp_ms: i64,
    event_id: &str,
) -> Result<Option<i64>, rdkafka::error::KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers as _, Message};
    use rdkafka::{Offset, TopicPartitionList};
    const WAIT: Duration = Duration::from_secs(5);
    let mut config = config;
    let consumer: BaseConsumer =
        config.set("group.id", "orderflow-checkout-locate").set("enable.auto.commit", "false").create()?;
    let mut at_time = TopicPartitionList::new();
    at_time.add_partition_offset(topic, partition, Offset::Offset(timestamp_ms))?;
    let start = consumer.offsets_for_times(at_time, WAIT)?;
    let Some(Offset::Offset(start)) = start.find_partition(topic, partition).map(|e| e.offset()) else {
        return Ok(None);
    };
    let (_, end) = consumer.fetch_watermarks(topic, partition, WAIT)?;
    let mut from = TopicPartitionList::new();
    from.add_partition_offset(topic, partition, Offset::Offset(start))?;
    consumer.assign(&from)?;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message?;
        let carries = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == EVENT_ID_HEADER).and_then(|h| h.value))
            .is_some_and(|v| v == event_id.as_bytes());
        if carries {
            return Ok(Some(message.offset()));
        }
        if message.offset() + 1 >= end {
            return Ok(None);
        }
    }
    Ok(None)
}

/// The step of appending a record for the request this task answers, when it is traced
/// (see [`infra::trace::within`]); ends when dropped, after the acknowledgement.
fn produce_step(topic: &str, key: &str) -> Option<Step> {
    let parent = infra::trace::current()?;
    Step::builder(format!("publish {topic}"), StepKind::Producer)?
        .parent(Some(parent))
        .attribute("messaging.destination.name", topic.to_string())
        .record_key(key)
        .start()
}
