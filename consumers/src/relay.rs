//! The outbox relay: publishes the events the processes decided, in the order they were
//! decided, and forgets them once the broker acknowledged them.
//!
//! At least once, by design: a relay killed after the broker acknowledged and before the
//! rows were deleted publishes them again. Every emitted event id is derived from its
//! cause, so readers (projections and processes alike) drop the copy; effects stay
//! exactly once. One relay per database publishes at a time (`Store::try_relay_lease`);
//! every process member runs one, and the others wait to take over.
use std::sync::Arc;
use std::time::Duration;

use infra::KafkaSettings;
use projections::store::fault::{hit, FaultPoint};
use projections::store::{OutboxRow, RelayLease, Store, StoreError};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::Notify;

use crate::ConsumerError;

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
    store: Store,
    kafka: &KafkaSettings,
    config: RelayConfig,
    wake: Arc<Notify>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ConsumerError> {
    let timeout = config.deadline.as_millis().to_string();
    let producer: FutureProducer = kafka
        .client_config_with(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "1"),
            ("message.timeout.ms", &timeout),
        ])
        .create()?;
    tokio::pin!(stop);
    let mut lease: Option<RelayLease> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let round = async {
            if lease.is_none() {
                lease = store.try_relay_lease().await?;
                if lease.is_none() {
                    return Ok::<_, StoreError>(RoundResult::Standby);
                }
                tracing::info!("this relay publishes the outbox");
            }
            let rows = store.outbox_batch(config.batch).await?;
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
                    store.delete_outbox(&published).await?;
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
                tracing::debug!(events = n, "outbox published");
                backoff = Duration::from_millis(100);
                continue;
            }
            Ok(RoundResult::Idle) => config.poll,
            Ok(RoundResult::Standby) => Duration::from_secs(1),
            Ok(RoundResult::BrokerFailed(e)) => {
                if e.rdkafka_error_code().is_some_and(infra::access_check::access_denied) {
                    return Err(ConsumerError::Denied(e.to_string()));
                }
                crate::metrics::outbox_failed();
                tracing::warn!(error = &e as &dyn std::error::Error, "publishing the outbox failed; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(5));
                backoff
            }
            Err(e) => {
                tracing::warn!(error = &e as &dyn std::error::Error, "the relay lost the database; retrying");
                lease = None;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                backoff
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
pub fn spawn_relay(store: Store, kafka: &KafkaSettings, wake: Arc<Notify>) -> RelayHandle {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let kafka = kafka.clone();
    let task = tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        run_relay(store, &kafka, RelayConfig::default(), wake, stopped).await
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
    for row in rows {
        let headers = OwnedHeaders::new()
            .insert(Header { key: schemas::PRINCIPAL_HEADER, value: Some(row.published_by.as_bytes()) });
        let record = FutureRecord::to(&row.topic).key(&row.key).payload(&row.payload).headers(headers);
        match producer.send_result(record) {
            Ok(delivery) => pending.push(delivery),
            Err((e, _)) => return Err(e),
        }
    }
    for delivery in pending {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e),
            Err(_) => return Err(rdkafka::error::KafkaError::Canceled),
        }
    }
    Ok(())
}
