//! Applying a batch the careful way, after its first attempt failed: backoff while the
//! database or the schema registry is away (as long as it takes, loudly by one rule:
//! [`infra::Backoff`]), halving to find a record the database refuses ([`super::bisect`]).
use std::sync::atomic::Ordering;

use projections::store::{Batch, BatchOutcome, LogRecord, StoreError};
use rdkafka::consumer::Consumer;

use super::applied::record_applied;
use super::bisect::{apply_bisecting, Bisect, Tried};
use super::env::BatchEnv;
use super::reading::Reading;
use crate::error::ConsumerError;
use crate::metrics as m;

/// Learns the schema ids of `batch` the codec does not know from the registry, before the
/// batch is decoded. A registry that does not answer (or answers with an error) is waited
/// for as long as it takes, never a reason to park a record: the member stalls, says so
/// (the backoff's rule, `orderflow_schema_registry_failures_total`, the lag growing) and
/// goes on with the same records when the registry is back. Returns false if the member
/// is stopping meanwhile.
pub(super) fn resolve_schemas(env: &BatchEnv<'_>, batch: &[LogRecord]) -> bool {
    let config = env.config;
    if config.contract.registry().is_none() {
        return true;
    }
    let runtime = &env.consumer.context().runtime;
    let mut backoff = infra::Backoff::new("Learning this batch's schema ids from the registry (nothing is parked)");
    loop {
        match runtime.block_on(config.contract.resolve(batch.iter().filter_map(|r| r.payload.as_deref()))) {
            Ok(_) => {
                backoff.succeeded(&config.group);
                m::registry_stalled(&config.group, false);
                env.stats.registry_stalled.store(false, Ordering::Relaxed);
                return true;
            }
            Err(e) => {
                m::registry_failure(&config.group);
                m::registry_stalled(&config.group, true);
                env.stats.registry_stalled.store(true, Ordering::Relaxed);
                let delay = backoff.failed(&e, &config.group);
                if env.stop.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(delay);
            }
        }
    }
}

/// Applies `batch`, retrying what may pass later (the database down, a lock timeout)
/// with backoff for as long as it takes, and setting aside what never will: when the
/// database refuses a value a record carries, the batch is halved until that record is
/// found, and it alone is parked with the database's reason.
pub(super) fn apply_with_retry(
    env: &BatchEnv<'_>,
    batch: &[LogRecord],
    reading: &mut Reading,
) -> Result<(), ConsumerError> {
    apply_bisecting(batch, &mut Careful { env, reading, started: std::time::Instant::now() }).map(|_| ())
}

/// The member's effects while bisecting: each attempt with backoff, parking through the
/// store, bookkeeping after each committed slice.
struct Careful<'e, 'r> {
    env: &'e BatchEnv<'e>,
    reading: &'r mut Reading,
    started: std::time::Instant,
}

/// A refusal of the database, shown with its whole chain of causes.
struct Refused(StoreError);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&infra::error_chain(&self.0))
    }
}

impl Bisect<LogRecord> for Careful<'_, '_> {
    type Outcome = BatchOutcome;
    type Refusal = Refused;
    type Error = ConsumerError;

    fn apply(&mut self, slice: &[LogRecord]) -> Result<Tried<BatchOutcome, Refused>, ConsumerError> {
        let BatchEnv { consumer, config, batches, codec, .. } = *self.env;
        let runtime = &consumer.context().runtime;
        let read_from = &self.reading.read_from;
        if let Some(causes) = self.env.causes {
            runtime.block_on(causes.wait(batches, slice));
        }
        let tried = with_backoff(self.env, || {
            let records =
                Batch { group: &config.group, topic: &config.topic, role: config.role(), records: slice, read_from };
            runtime.block_on(batches.apply(config.kind, &records, codec))
        })?;
        Ok(match tried {
            Tried::Done(outcome) => Tried::Done(outcome),
            Tried::Refused(e) => Tried::Refused(Refused(e)),
            Tried::Stopped => Tried::Stopped,
        })
    }

    fn park(&mut self, record: &[LogRecord], refusal: Refused) -> Result<Option<BatchOutcome>, ConsumerError> {
        let BatchEnv { consumer, config, batches, codec, .. } = *self.env;
        let reason = refusal.to_string();
        if let Some(first) = record.first() {
            tracing::error!(group = %config.group, partition = first.partition, offset = first.offset, %reason,
                "The database refuses this record. It is parked in dead letters; its order's later events wait behind it.");
        }
        m::record_refused(&config.group);
        let runtime = &consumer.context().runtime;
        let read_from = &self.reading.read_from;
        match with_backoff(self.env, || {
            let records =
                Batch { group: &config.group, topic: &config.topic, role: config.role(), records: record, read_from };
            runtime.block_on(batches.park_refused(&records, codec, &reason))
        })? {
            Tried::Done(outcome) => Ok(Some(outcome)),
            Tried::Refused(e) => Err(e.into()),
            Tried::Stopped => Ok(None),
        }
    }

    fn done(&mut self, slice: &[LogRecord], outcome: BatchOutcome) {
        record_applied(self.env, slice, self.reading, &outcome, self.started);
        if let Some(notify) = &self.env.config.outbox_written {
            notify.notify_one();
        }
    }
}

/// Runs `attempt` until it succeeds or fails in a way retrying cannot fix: `Done`, or
/// `Refused` for a refusal of the records' content; `Stopped` once the member is stopping.
/// A database that stays down is retried without end, by the backoff's rule.
fn with_backoff<T>(
    env: &BatchEnv<'_>,
    mut attempt: impl FnMut() -> Result<T, StoreError>,
) -> Result<Tried<T, StoreError>, ConsumerError> {
    let mut backoff = infra::Backoff::new("Applying the batch");
    loop {
        match attempt() {
            Ok(value) => {
                backoff.succeeded(&env.config.group);
                return Ok(Tried::Done(value));
            }
            Err(e) if e.refuses_content() => return Ok(Tried::Refused(e)),
            Err(e) if e.is_retryable() => {
                m::batch_retry(&env.config.group);
                let delay = backoff.failed(&e, &env.config.group);
                if env.stop.load(Ordering::Relaxed) {
                    return Ok(Tried::Stopped);
                }
                std::thread::sleep(delay);
            }
            Err(e) => return Err(e.into()),
        }
    }
}
