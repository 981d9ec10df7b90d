//! The batch in flight: applied on the runtime while the member thread polls the next one
//! (one at a time, in order), and finished in one place ([`Flight::settle`]) whatever asks
//! for it: a rebalance, a due timer, the next batch, stopping.
use std::collections::BTreeMap;
use std::time::Instant;

use projections::store::{Batch, BatchOutcome, DecodedRecords, LogRecord, StoreError};
use rdkafka::consumer::Consumer;

use super::applied::record_applied;
use super::env::BatchEnv;
use super::reading::Reading;
use super::retry::apply_with_retry;
use super::steps::BatchSteps;
use crate::error::ConsumerError;
use crate::metrics as m;

/// A batch being applied on the runtime while the member reads the next one.
struct InFlight {
    /// The batch's records come back with its result.
    task: tokio::task::JoinHandle<(Vec<LogRecord>, Result<BatchOutcome, StoreError>)>,
    started: Instant,
    /// The records' summed buffer wait and age at poll (see [`super::stats::Timings`]).
    buffer_timing: (f64, f64),
    steps: Option<BatchSteps>,
}

/// At most one batch in flight.
#[derive(Default)]
pub(super) struct Flight(Option<InFlight>);

impl Flight {
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    pub fn is_done(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.task.is_finished())
    }

    /// Starts applying `records` on the runtime: decoding, folding and the database round
    /// trips of this batch overlap with the member polling the next one. Batches still
    /// apply one at a time, in order: call only with nothing in flight.
    pub fn start(
        &mut self,
        env: &BatchEnv<'_>,
        mut records: Vec<LogRecord>,
        decoded: Option<DecodedRecords>,
        reading: &Reading,
        started: Instant,
        buffer_timing: (f64, f64),
    ) {
        debug_assert!(self.0.is_none(), "one batch in flight at most");
        let (kind, batches, codec) = (env.config.kind, env.batches.clone(), env.codec.clone());
        let (group, topic, role) = (env.config.group.clone(), env.config.topic.clone(), env.config.role());
        let read_from = reading.read_from.clone();
        let causes = env.causes.cloned();
        let steps = BatchSteps::start(&group, kind, &topic, &mut records);
        let task = env.consumer.context().runtime.spawn(async move {
            if let Some(causes) = causes {
                causes.wait(&batches, &records).await;
            }
            let batch = Batch { group: &group, topic: &topic, role, records: &records, read_from: &read_from };
            let result = batches.apply_decoded(kind, &batch, &codec, decoded).await;
            (records, result)
        });
        self.0 = Some(InFlight { task, started, buffer_timing, steps });
    }

    /// Finishes the batch in flight, if any, and then drops from `buffer` the records of
    /// partitions it rewound. The one exit of every batch.
    pub fn settle(
        &mut self,
        env: &BatchEnv<'_>,
        reading: &mut Reading,
        buffer: &mut Vec<LogRecord>,
    ) -> Result<(), ConsumerError> {
        if let Some(flight) = self.0.take() {
            finish(env, flight, reading)?;
            reading.forget_rewound(buffer);
        }
        Ok(())
    }
}

/// Waits for the batch in flight and does the bookkeeping of a committed batch. A batch
/// that failed is applied again the careful way ([`apply_with_retry`]: backoff while the
/// database is away, halving to find a record it refuses): its transaction rolled back,
/// so nothing of it is in the database.
fn finish(env: &BatchEnv<'_>, flight: InFlight, reading: &mut Reading) -> Result<(), ConsumerError> {
    let InFlight { task, started, buffer_timing, steps } = flight;
    let (records, result) = env.consumer.context().runtime.block_on(task).map_err(ConsumerError::BatchTask)?;
    if let Some(steps) = steps {
        steps.end(result.as_ref().err().map(|e| infra::error_chain(e)));
    }
    match result {
        Ok(outcome) => {
            record_applied(env, &records, reading, &outcome, started);
            if let Some(notify) = &env.config.outbox_written {
                notify.notify_one();
            }
        }
        Err(e) => {
            if !e.refuses_content() {
                m::batch_retry(&env.config.group);
                tracing::warn!(error = &e as &dyn std::error::Error, group = %env.config.group,
                    "A batch failed. Applying it again with backoff; nothing of it was committed.");
            }
            apply_with_retry(env, &records, reading)?;
        }
    }
    let mut timings = env.stats.timings.lock().unwrap_or_else(|e| e.into_inner());
    timings.records += records.len() as u64;
    timings.batches += 1;
    timings.buffer_wait_ms += buffer_timing.0;
    timings.age_at_poll_ms += buffer_timing.1;
    timings.apply_ms += records.len() as f64 * started.elapsed().as_secs_f64() * 1000.0;
    Ok(())
}

/// A debug line naming each partition's offsets in a batch.
pub(super) fn log_batch(env: &BatchEnv<'_>, records: &[LogRecord], reading: &Reading) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let mut spans: BTreeMap<i32, (i64, i64, usize)> = BTreeMap::new();
        for r in records {
            let e = spans.entry(r.partition).or_insert((r.offset, r.offset, 0));
            e.1 = r.offset;
            e.2 += 1;
        }
        tracing::debug!(group = %env.config.group, ?spans, read_from = ?reading.read_from, "Batch cut.");
    }
}
