//! The batches in flight: applied on the runtime while the member thread polls the next
//! one, at most [`DEPTH`] at a time and finished in order in one place ([`Flight::settle`])
//! whatever asks for it: a rebalance, a due timer, the next batch, stopping.
//!
//! The second batch starts before the first has committed. Once the first holds its offset
//! rows, the second's transaction opens and waits at those rows' locks (PostgreSQL; SQLite's
//! single writer) for the first to commit or roll back, so the database goes from one
//! batch's commit to the next one's rows with no round trip to the member in between. The
//! second is dispatched as if the first had committed (`read_from` past the first's
//! records); if the first did not, the stored offsets are below that (a row the first had
//! created is created again where the first started: [`Pipelined::origins`]) and the second
//! applies nothing of those partitions and rewinds them, the rule that already fences a
//! member that read past the stored offset.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use projections::store::{Batch, BatchOutcome, DecodedRecords, LogRecord, Pipelined, StoreError};
use rdkafka::consumer::Consumer;
use tokio::sync::Notify;

use super::applied::record_applied;
use super::env::BatchEnv;
use super::reading::Reading;
use super::retry::apply_with_retry;
use super::steps::BatchSteps;
use crate::error::ConsumerError;
use crate::metrics as m;

/// Batches in flight at most: one committing, the next waiting at its locks.
const DEPTH: usize = 2;

/// A batch being applied on the runtime while the member reads the next one.
struct InFlight {
    /// The batch's records come back with its result.
    task: tokio::task::JoinHandle<(Vec<LogRecord>, Result<BatchOutcome, StoreError>)>,
    started: Instant,
    /// The records' summed buffer wait and age at poll (see [`super::stats::Timings`]).
    buffer_timing: (f64, f64),
    steps: Option<BatchSteps>,
    /// Per partition, the offsets of the batch's first record and after its last: where
    /// it starts, and where the next batch starts reading if this one commits.
    spans: BTreeMap<i32, (i64, i64)>,
    /// Notified once the batch holds its offset rows, or ended.
    locked: Arc<Notify>,
    /// Where the batch was dispatched to read its partitions from (see [`Flight::start`]).
    dispatched_from: BTreeMap<i32, i64>,
}

/// Notifies when dropped: at a task's end, even one that panicked.
struct NotifyOnDrop(Arc<Notify>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// The batches in flight, oldest first.
#[derive(Default)]
pub(super) struct Flight(VecDeque<InFlight>);

impl Flight {
    pub fn is_some(&self) -> bool {
        !self.0.is_empty()
    }

    /// No other batch may start until the oldest is finished.
    pub fn is_full(&self) -> bool {
        self.0.len() >= DEPTH
    }

    /// The oldest batch in flight is done (its result waits to be finished).
    pub fn is_done(&self) -> bool {
        self.0.front().is_some_and(|f| f.task.is_finished())
    }

    /// Starts applying `records` on the runtime: decoding, folding and the database round
    /// trips of this batch overlap with the member polling the next one. Batches apply in
    /// order: a batch that shares partitions with one in flight waits at their offset rows
    /// in the database. Call only when not [`Flight::is_full`].
    pub fn start(
        &mut self,
        env: &BatchEnv<'_>,
        mut records: Vec<LogRecord>,
        decoded: Option<DecodedRecords>,
        reading: &Reading,
        started: Instant,
        buffer_timing: (f64, f64),
    ) {
        debug_assert!(!self.is_full(), "at most {DEPTH} batches in flight");
        let (kind, batches, codec) = (env.config.kind, env.batches.clone(), env.codec.clone());
        let (group, topic, role) = (env.config.group.clone(), env.config.topic.clone(), env.config.role());
        // Where this batch reads from if the batches ahead of it commit, and where the
        // first of them starts on each partition they cover.
        let mut read_from = reading.read_from.clone();
        let mut pipelined = Pipelined::default();
        for ahead in &self.0 {
            for (p, (first, end)) in &ahead.spans {
                read_from.insert(*p, *end);
                pipelined.origins.entry(*p).or_insert(*first);
            }
        }
        let mut spans: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for r in &records {
            spans.entry(r.partition).or_insert((r.offset, r.offset)).1 = r.offset + 1;
        }
        let dispatched_from = spans.keys().filter_map(|p| read_from.get(p).map(|at| (*p, *at))).collect();
        let locked = pipelined.locked.clone();
        let ahead_locked = self.0.back().map(|ahead| ahead.locked.clone());
        let causes = env.causes.cloned();
        let steps = BatchSteps::start(&group, kind, &topic, &mut records);
        let task = env.consumer.context().runtime.spawn(async move {
            // Whatever happens (an error, a panic), the batch behind this one need not wait
            // any longer once this one ends.
            let _ended = NotifyOnDrop(pipelined.locked.clone());
            if let Some(ahead) = ahead_locked {
                ahead.notified().await;
            }
            if let Some(causes) = causes {
                causes.wait(&batches, &records).await;
            }
            let batch = Batch {
                group: &group,
                topic: &topic,
                role,
                records: &records,
                read_from: &read_from,
                pipelined: Some(&pipelined),
            };
            let result = batches.apply_decoded(kind, &batch, &codec, decoded).await;
            (records, result)
        });
        self.0.push_back(InFlight { task, started, buffer_timing, steps, spans, locked, dispatched_from });
    }

    /// Finishes every batch in flight, oldest first, and then drops from `buffer` the
    /// records of partitions they rewound. The one exit of every batch.
    pub fn settle(
        &mut self,
        env: &BatchEnv<'_>,
        reading: &mut Reading,
        buffer: &mut Vec<LogRecord>,
    ) -> Result<(), ConsumerError> {
        self.settle_while(env, reading, buffer, Flight::is_some)
    }

    /// Finishes the batches in flight that are done, oldest first, stopping at the first
    /// that is not.
    pub fn settle_done(
        &mut self,
        env: &BatchEnv<'_>,
        reading: &mut Reading,
        buffer: &mut Vec<LogRecord>,
    ) -> Result<(), ConsumerError> {
        self.settle_while(env, reading, buffer, Flight::is_done)
    }

    fn settle_while(
        &mut self,
        env: &BatchEnv<'_>,
        reading: &mut Reading,
        buffer: &mut Vec<LogRecord>,
        more: fn(&Flight) -> bool,
    ) -> Result<(), ConsumerError> {
        while more(self) {
            self.settle_oldest(env, reading, buffer)?;
        }
        Ok(())
    }

    /// Finishes the oldest batch in flight, if any (waiting for it), then drops from
    /// `buffer` the records of partitions it rewound.
    pub fn settle_oldest(
        &mut self,
        env: &BatchEnv<'_>,
        reading: &mut Reading,
        buffer: &mut Vec<LogRecord>,
    ) -> Result<(), ConsumerError> {
        if let Some(flight) = self.0.pop_front() {
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
    let InFlight { task, started, buffer_timing, steps, dispatched_from, .. } = flight;
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
            // The careful way reads the partitions from where the batch was dispatched to:
            // one that a batch ahead rewound meanwhile is then above the stored offset and
            // is rewound again, never applied past records not applied.
            reading.read_from.extend(dispatched_from);
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
