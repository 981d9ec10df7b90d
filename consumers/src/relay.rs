//! The outbox relay: publishes the events the processes decided, in the order they were
//! decided, and forgets them once the broker acknowledged them.
//!
//! At least once, by design: a relay killed after the broker acknowledged and before the
//! rows were deleted publishes them again. Every emitted event id is derived from its
//! cause, so readers (projections and processes alike) drop the copy; effects stay
//! exactly once. One relay per database publishes at a time (`Outbox::try_relay_lease`);
//! every process member runs one, and the others wait to take over.
use std::sync::Arc;
use std::time::Duration;

use infra::KafkaSettings;
use projections::store::fault::{hit, FaultPoint};
use projections::store::{Outbox, OutboxRow, RelayLease, StoreError};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::Notify;

use crate::error::ConsumerError;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// How often an idle relay looks at the outbox (a member in the same process wakes it
    /// at once; members of other processes are seen at the next look).
    pub poll: Duration,
    /// Events per publish round.
    pub batch: i64,
    /// How long a round may wait for the broker's acknowledgements.
    pub deadline: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig { poll: Duration::from_millis(25), batch: 1_000, deadline: Duration::from_secs(30) }
    }
}

/// Runs the relay until `stop` resolves. Store and broker failures are retried (nothing
/// is lost: the outbox keeps every unacknowledged event); a broker refusing access ends it.
pub async fn run_relay(
    outbox: Outbox,
    kafka: &KafkaSettings,
    config: RelayConfig,
    wake: Arc<Notify>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ConsumerError> {
    let producer: FutureProducer = kafka.idempotent_producer(config.deadline, Duration::from_millis(1)).create()?;
    tokio::pin!(stop);
    let mut lease: Option<RelayLease> = None;
    let mut broker = infra::Backoff::new("Publishing the outbox");
    let mut database = infra::Backoff::new("The relay's database");
    loop {
        let round = async {
            if lease.is_none() {
                lease = outbox.try_relay_lease().await?;
                if lease.is_none() {
                    return Ok::<_, StoreError>(RoundResult::Standby);
                }
                tracing::info!("This relay publishes the outbox (it holds the lease).");
            }
            let rows = outbox.outbox_batch(config.batch).await?;
            if rows.is_empty() {
                return Ok(RoundResult::Idle);
            }
            if let Some(lease) = lease.as_mut() {
                lease.check().await?;
            }
            hit(FaultPoint::RelayBeforePublish);
            match publish(&producer, &rows).await {
                Ok(()) => {
                    hit(FaultPoint::RelayAfterPublish);
                    let published: Vec<i64> = rows.iter().map(|r| r.seq).collect();
                    outbox.delete_outbox(&published).await?;
                    Ok(RoundResult::Published(rows.len()))
                }
                Err(e) => Ok(RoundResult::BrokerFailed(e)),
            }
        };
        let result = tokio::select! {
            result = round => result,
            _ = &mut stop => return Ok(()),
        };
        let wait = match result {
            Ok(RoundResult::Published(n)) => {
                crate::metrics::outbox_published(n);
                tracing::debug!(events = n, "Outbox events published.");
                broker.succeeded("outbox");
                database.succeeded("outbox");
                continue;
            }
            Ok(RoundResult::Idle) => {
                database.succeeded("outbox");
                config.poll
            }
            Ok(RoundResult::Standby) => {
                database.succeeded("outbox");
                Duration::from_secs(1)
            }
            Ok(RoundResult::BrokerFailed(e)) => {
                if e.rdkafka_error_code().is_some_and(infra::access_check::access_denied) {
                    return Err(ConsumerError::Denied(e.to_string()));
                }
                crate::metrics::outbox_failed();
                broker.failed(&e, "outbox")
            }
            Err(e) => {
                lease = None;
                database.failed(&e, "outbox")
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = &mut stop => return Ok(()),
        }
    }
}

/// A relay running on a task of its own.
pub struct RelayHandle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ConsumerError>>,
}

/// Starts [`run_relay`] with the default settings on a task; stop it with
/// [`RelayHandle::stop`]. Must be called from within a tokio runtime.
pub fn spawn_relay(outbox: Outbox, kafka: &KafkaSettings, wake: Arc<Notify>) -> RelayHandle {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let kafka = kafka.clone();
    let task = tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        run_relay(outbox, &kafka, RelayConfig::default(), wake, stopped).await
    });
    RelayHandle { stop: Some(stop), task }
}

impl RelayHandle {
    /// Resolves when the relay ended on its own (an error, since it runs until stopped).
    pub async fn ended(&mut self) -> Result<(), ConsumerError> {
        (&mut self.task).await.unwrap_or(Err(ConsumerError::Vanished))
    }

    /// Stops the relay after its current round and waits for it.
    pub async fn stop(mut self) -> Result<(), ConsumerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap_or(Err(ConsumerError::Vanished))
    }
}

enum RoundResult {
    Published(usize),
    Idle,
    Standby,
    BrokerFailed(rdkafka::error::KafkaError),
}

/// Sends every row, then waits for every acknowledgement: the idempotent producer keeps
/// each partition's order, so the log holds the events as they were decided.
#[tracing::instrument(skip_all, fields(events = rows.len()))]
async fn publish(producer: &FutureProducer, rows: &[OutboxRow]) -> Result<(), rdkafka::error::KafkaError> {
    let mut pending = Vec::with_capacity(rows.len());
    // One step per event whose decision was traced, ended when the broker acknowledged it.
    let mut steps = Vec::new();
    for row in rows {
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: schemas::PRINCIPAL_HEADER, value: Some(row.published_by.as_bytes()) });
        let epoch = row.epoch.to_string();
        if row.epoch > 1 {
            headers = headers.insert(Header { key: schemas::EPOCH_HEADER, value: Some(epoch.as_bytes()) });
        }
        if let Some(step) = relay_step(row) {
            headers = headers.insert(Header { key: schemas::TRACE_HEADER, value: Some(step.traceparent().as_bytes()) });
            steps.push(step);
        }
        let record = FutureRecord::to(&row.topic).key(&row.key).payload(&row.payload).headers(headers);
        match producer.send_result(record) {
            Ok(delivery) => pending.push(delivery),
            Err((e, _)) => return Err(e),
        }
    }
    for delivery in pending {
        let failed = match delivery.await {
            Ok(Ok(_)) => None,
            Ok(Err((e, _))) => Some(e),
            Err(_) => Some(rdkafka::error::KafkaError::Canceled),
        };
        if let Some(e) = failed {
            for mut step in steps {
                step.fail(format!("not acknowledged: {e}"));
            }
            return Err(e);
        }
    }
    Ok(())
}

/// The relay's step for `row`, a child of the decision that emitted it; `None` when
/// tracing is off or the decision was not traced.
fn relay_step(row: &OutboxRow) -> Option<infra::trace::Step> {
    let parent = infra::trace::parse(row.trace_parent.as_deref()?)?;
    infra::trace::Step::builder(format!("relay {}", row.topic), infra::trace::StepKind::Producer)?
        .parent(Some(parent))
        .attribute("messaging.destination.name", row.topic.clone())
        .attribute("orderflow.published_by", row.published_by.clone())
        .record_key(&row.key)
        .start()
}
