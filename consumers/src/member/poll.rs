//! The member's poll loop: read records into the buffer, follow rebalances, cut batches by
//! the rule in [`super::cut`], keep one batch in flight ([`super::flight`]), fire timers
//! and refresh lag between batches.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use projections::store::{Batches, LogRecord};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;

use super::causal::Causes;
use super::config::MemberConfig;
use super::cut::{BufferState, CutRule};
use super::env::BatchEnv;
use super::flight::{log_batch, Flight};
use super::reading::Reading;
use super::retry::resolve_schemas;
use super::stats::{replace_topic, MemberStats};
use super::timers::{fire_timers, fires_timers, TIMER_EVERY};
use crate::context::MemberContext;
use crate::error::ConsumerError;
use crate::metrics as m;

/// The principal the record's header names (the first such header; see
/// [`schemas::principal_of_header`]).
fn published_by(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<String> {
    use rdkafka::message::{Headers, Message};
    let headers = message.headers()?;
    let header = headers.iter().find(|h| h.key == schemas::PRINCIPAL_HEADER)?;
    schemas::principal_of_header(header.value)
}

/// The ownership epoch the record's header names (1 without one).
fn epoch(message: &rdkafka::message::BorrowedMessage<'_>) -> u32 {
    use rdkafka::message::{Headers, Message};
    let value = message.headers().and_then(|h| h.iter().find(|h| h.key == schemas::EPOCH_HEADER)).and_then(|h| h.value);
    schemas::epoch_of_header(value)
}

/// The record's trace context, when tracing is on and it carries a valid one.
fn trace_parent(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<String> {
    use rdkafka::message::{Headers, Message};
    if !infra::trace::enabled() {
        return None;
    }
    let header = message.headers()?.iter().find(|h| h.key == schemas::TRACE_HEADER)?;
    let value = std::str::from_utf8(header.value?).ok()?;
    infra::trace::parse(value).map(|_| value.to_string())
}

fn record_of(message: &rdkafka::message::BorrowedMessage<'_>) -> (LogRecord, Option<i64>) {
    let record = LogRecord {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        timestamp_ms: message.timestamp().to_millis(),
        published_by: published_by(message),
        epoch: epoch(message),
        trace_parent: trace_parent(message),
    };
    (record, message.timestamp().to_millis())
}

/// The member's buffer: records waiting for their batch, with what the timings need.
struct Buffer {
    records: Vec<LogRecord>,
    /// When the oldest buffered record arrived.
    started: Instant,
    /// Sums over the buffered records of (poll time − `started`) and of their age at poll.
    polled_after_start_ms: f64,
    age_at_poll_ms: f64,
}

impl Buffer {
    fn push(&mut self, record: LogRecord, created_ms: Option<i64>, now: Instant) {
        if self.records.is_empty() {
            self.started = now;
            self.polled_after_start_ms = 0.0;
            self.age_at_poll_ms = 0.0;
        }
        self.polled_after_start_ms += now.saturating_duration_since(self.started).as_secs_f64() * 1000.0;
        if let Some(created) = created_ms {
            self.age_at_poll_ms += (schemas::clock::now_ms() - created).max(0) as f64;
        }
        self.records.push(record);
    }

    /// What the cut rule looks at.
    fn state(&self, now: Instant, in_flight: bool) -> BufferState {
        BufferState { len: self.records.len(), age: now.saturating_duration_since(self.started), in_flight }
    }

    /// Cuts the buffer into a batch, sorted per partition in offset order (they arrive
    /// that way), with the records' summed wait in the buffer and age at poll.
    fn take(&mut self, now: Instant, capacity: usize) -> (Vec<LogRecord>, (f64, f64)) {
        let waited_ms = self.records.len() as f64 * now.saturating_duration_since(self.started).as_secs_f64() * 1000.0
            - self.polled_after_start_ms;
        let timing = (waited_ms.max(0.0), self.age_at_poll_ms);
        let mut records = std::mem::replace(&mut self.records, Vec::with_capacity(capacity));
        records.sort_by_key(|r| (r.partition, r.offset));
        (records, timing)
    }
}

pub(super) fn poll_loop(
    consumer: &BaseConsumer<MemberContext>,
    config: &MemberConfig,
    batches: &Batches,
    stop: &AtomicBool,
    stats: &MemberStats,
    causes: Option<&Causes>,
) -> Result<(), ConsumerError> {
    let codec = config.contract.codec().clone();
    let env = BatchEnv { consumer, config, batches, codec: &codec, stop, stats, causes };
    let mut reading = Reading::default();
    // At most one batch is applied at a time; while it is, the member reads the next one.
    let mut flight = Flight::default();
    let mut buffer = Buffer {
        records: Vec::with_capacity(config.batch_max),
        started: Instant::now(),
        polled_after_start_ms: 0.0,
        age_at_poll_ms: 0.0,
    };
    let result = poll_batches(&env, &mut reading, &mut flight, &mut buffer);
    // Stopping or failing: a batch still in flight finishes (commits or not) first.
    flight.settle(&env, &mut reading, &mut buffer.records)?;
    result
}

fn poll_batches(
    env: &BatchEnv<'_>,
    reading: &mut Reading,
    flight: &mut Flight,
    buffer: &mut Buffer,
) -> Result<(), ConsumerError> {
    let BatchEnv { consumer, config, codec, stop, stats, .. } = *env;
    let context = consumer.context();
    let rule = CutRule { batch_max: config.batch_max, batch_wait: config.batch_wait };
    let mut lag_at = Instant::now();
    let mut timers_at = Instant::now();
    let mut owned: BTreeSet<i32> = BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        let wait = rule.poll_wait(buffer.state(Instant::now(), flight.is_some()));
        // Rebalance callbacks run inside `poll`; a record it returns belongs to the
        // assignment as it is after them, so handle the change before buffering it.
        let polled = consumer.poll(wait).map(|r| r.map(|m| record_of(&m)));
        // One clock reading per record: on some virtual machines reading it is a system call.
        let now = Instant::now();
        if context.assignment_changed.swap(false, Ordering::SeqCst) {
            // The batch in flight finishes under the assignment it was read with; then
            // the buffer keeps only what this member still owns.
            flight.settle(env, reading, &mut buffer.records)?;
            owned = context.owned();
            let positioned = std::mem::take(&mut *context.positioned_at.lock().unwrap_or_else(|e| e.into_inner()));
            reading.reassigned(&mut buffer.records, &owned, positioned);
            {
                let mut all = stats.owned.lock().unwrap_or_else(|e| e.into_inner());
                all.retain(|(t, _)| *t != config.topic);
                all.extend(owned.iter().map(|p| (config.topic.clone(), *p)));
            }
        }
        let got_record = matches!(polled, Some(Ok(_)));
        match polled {
            Some(Ok((record, created_ms))) if owned.contains(&record.partition) => buffer.push(record, created_ms, now),
            // A leftover of a partition this member no longer owns.
            Some(Ok(_)) => {}
            // The fetch position of an owned partition fell outside the log (the topic was
            // recreated under the group, retention overtook it): librdkafka stops fetching it
            // (`auto.offset.reset=error`) and says so here. Find which, and refuse it as an
            // assignment would.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::AutoOffsetReset,
            ))) => context.refuse_out_of_range(consumer),
            // The broker refuses this member's credentials or ACLs: no retry can fix that.
            Some(Err(e)) if e.rdkafka_error_code().is_some_and(infra::access_check::access_denied) => {
                return Err(ConsumerError::Denied(e.to_string()));
            }
            Some(Err(e)) => tracing::warn!(error = &e as &dyn std::error::Error, group = %config.group,
                "Reading from the broker failed. librdkafka retries by itself."),
            None => {}
        }
        // A refusal comes with errors or silence, never between records.
        if !got_record {
            if let Some(refusal) = context.access.refusal() {
                return Err(ConsumerError::Denied(refusal));
            }
            // A fatal error leaves the client unable to consume for good: stop, rather than
            // poll a dead client for ever.
            if let Some((code, reason)) = consumer.client().fatal_error() {
                return Err(ConsumerError::Fatal { code, reason });
            }
        }
        // A batch in flight that is done is finished first.
        if flight.is_done() {
            flight.settle(env, reading, &mut buffer.records)?;
        }
        if rule.cut(buffer.state(now, flight.is_some())) {
            let batch_start = Instant::now();
            let (mut records, buffer_timing) = buffer.take(batch_start, config.batch_max);
            if !resolve_schemas(env, &records) {
                // Stopping while the registry is away: nothing was applied; the records
                // are read again by the partitions' next owner.
                return Ok(());
            }
            // Decoded while the batch before it may still be in the database.
            let mut decoded = Batches::decode(config.kind, config.role(), codec, &records);
            let cut = records.len();
            // Full with one in flight: that one finishes first (it may rewind partitions
            // whose later records are in this one, rarely).
            flight.settle(env, reading, &mut records)?;
            if records.len() != cut {
                decoded = Batches::decode(config.kind, config.role(), codec, &records);
            }
            log_batch(env, &records, reading);
            if !records.is_empty() {
                flight.start(env, records, decoded, reading, batch_start, buffer_timing);
            }
        }
        if now.saturating_duration_since(lag_at) >= Duration::from_secs(1) {
            lag_at = now;
            refresh_lag(consumer, config, stats);
        }
        if now.saturating_duration_since(timers_at) >= TIMER_EVERY {
            timers_at = now;
            if fires_timers(config) {
                // Timers fire between batches.
                flight.settle(env, reading, &mut buffer.records)?;
            }
            fire_timers(env, &owned);
        }
    }
    Ok(())
}

fn refresh_lag(consumer: &BaseConsumer<MemberContext>, config: &MemberConfig, stats: &MemberStats) {
    let context = consumer.context();
    let owned = context.owned();
    let positions = stats.positions.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let known = context.log_ends.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut ends = BTreeMap::new();
    for p in owned {
        if let Some(high) = known.get(&p).copied() {
            ends.insert(p, high);
            if let Some(next) = positions.get(&(config.topic.clone(), p)) {
                m::lag(config.kind.name(), &config.group, &config.topic, p, (high - next).max(0));
            }
        }
    }
    replace_topic(&stats.log_ends, &config.topic, ends);
}
