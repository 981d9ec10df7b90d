//! One member of a projection's consumer group.
//!
//! The member polls a `BaseConsumer` on a dedicated thread. Why not a `StreamConsumer`
//! inside a task: rdkafka runs the rebalance callback on the polling thread, and that
//! callback must read offsets from the database before assigning; doing that inside a
//! tokio worker would block it (and `block_on` there panics).
//!
//! A batch is applied on the runtime while the thread polls the next one, so decoding,
//! folding and the database's work overlap with reading the log (one batch in flight at
//! most; the next starts when it finished). Whatever changes what the member owns waits
//! for it: after a rebalance, the batch in flight finishes before the buffer is cut to the
//! new assignment, and a partition the batch rewound loses its buffered records. A
//! rebalance callback may run while a batch is in flight; the database decides who
//! applies what (the batch holds its offset rows; a new owner waits for them and skips
//! what was applied).
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use infra::KafkaSettings;
use projections::store::{
    Batch, BatchOutcome, DecodedRecords, LogRecord, ProcessKind, ProcessSettings, Store, StoreError,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use schemas::Codec;
use tokio::runtime::Handle;

use crate::context::MemberContext;
use crate::metrics as m;
use projections::ProjectionKind;

use crate::ConsumerError;

/// What a member's group does with the records: describe (a projection) or decide (a
/// process, whose decisions go to the outbox).
#[derive(Debug, Clone)]
pub enum Work {
    Project(ProjectionKind),
    Decide(ProcessKind, ProcessSettings),
}

impl Work {
    pub fn name(&self) -> &'static str {
        match self {
            Work::Project(kind) => kind.name(),
            Work::Decide(kind, _) => kind.name(),
        }
    }

    /// A projection's records decoded as it reads them (processes decode inside their
    /// batch).
    fn decode(&self, codec: &Codec, records: &[LogRecord]) -> Option<DecodedRecords> {
        match self {
            Work::Project(kind) => Some(kind.decode(codec, records)),
            Work::Decide(..) => None,
        }
    }

    async fn apply(&self, store: &Store, batch: &Batch<'_>, codec: &Codec) -> Result<BatchOutcome, StoreError> {
        match self {
            Work::Project(kind) => kind.apply_batch(store, batch, codec).await,
            Work::Decide(kind, settings) => store.apply_process_batch(*kind, batch, codec, settings).await,
        }
    }
}

impl From<ProjectionKind> for Work {
    fn from(kind: ProjectionKind) -> Self {
        Work::Project(kind)
    }
}

#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub work: Work,
    /// The schema ids records are read (and decisions written) with: the embedded
    /// manifest, or a schema registry's, learned as records name them.
    pub contract: infra::schema_registry::Contract,
    /// Woken after every batch that may have put decisions into the outbox, so a relay in
    /// this process publishes them at once instead of at its next look.
    pub outbox_written: Option<Arc<tokio::sync::Notify>>,
    pub group: String,
    pub topic: String,
    /// Records per batch at most.
    pub batch_max: usize,
    /// How long to wait for a batch to fill before applying what there is.
    pub batch_wait: Duration,
    /// Which consumer group protocol the member speaks.
    pub group_protocol: GroupProtocol,
    /// `range`, `roundrobin` or `cooperative-sticky` (classic protocol only: under the
    /// consumer protocol the broker assigns).
    pub assignment_strategy: String,
    /// Classic protocol only: under the consumer protocol the broker's
    /// `group.consumer.session.timeout.ms` applies.
    pub session_timeout: Duration,
    pub max_poll_interval: Duration,
    /// librdkafka's `fetch.wait.max.ms`: how long the broker may hold a fetch with no new
    /// data. Kafka answers as soon as data arrives, so this only bounds idle fetches.
    pub fetch_wait: Duration,
    /// How long shutdown may take before the member gives up on a clean leave.
    pub shutdown_deadline: Duration,
}

/// The one default of each member setting (the CLI shows and uses these too).
pub mod defaults {
    use std::time::Duration;

    /// A batch is cut when it is full or `BATCH_WAIT` after its first record: far behind,
    /// batches are this large (per-batch costs spread over more records: measured 5,000
    /// ≈ 1.05× 2,000 on a backlog); caught up, they hold what a few milliseconds bring.
    pub const BATCH_MAX: usize = 5_000;
    pub const BATCH_WAIT: Duration = Duration::from_millis(5);
    pub const ASSIGNMENT_STRATEGY: &str = "cooperative-sticky";
    /// The classic protocol's assignors, for validating the setting.
    pub const ASSIGNMENT_STRATEGIES: [&str; 3] = ["range", "roundrobin", "cooperative-sticky"];
    pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
    pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);
    pub const FETCH_WAIT: Duration = Duration::from_millis(10);
    pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
}

impl MemberConfig {
    pub fn new(work: impl Into<Work>, topic: &str) -> Self {
        let work = work.into();
        let group = match &work {
            Work::Project(kind) => projections::store::default_group(*kind),
            Work::Decide(kind, _) => format!("{}-{kind}", projections::store::DEFAULT_GROUP_PREFIX),
        };
        MemberConfig {
            work,
            contract: infra::schema_registry::Contract::embedded(),
            outbox_written: None,
            group,
            topic: topic.to_string(),
            batch_max: defaults::BATCH_MAX,
            batch_wait: defaults::BATCH_WAIT,
            group_protocol: GroupProtocol::Classic,
            assignment_strategy: defaults::ASSIGNMENT_STRATEGY.into(),
            session_timeout: defaults::SESSION_TIMEOUT,
            max_poll_interval: defaults::MAX_POLL_INTERVAL,
            shutdown_deadline: defaults::SHUTDOWN_DEADLINE,
            fetch_wait: defaults::FETCH_WAIT,
        }
    }
}

/// The consumer group protocol (`group.protocol`): `classic` (the join/sync protocol, with a
/// client-side assignor) or `consumer` (KIP-848: the broker assigns and reconciles
/// incrementally, and owns the session timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupProtocol {
    #[default]
    Classic,
    Consumer,
}

impl GroupProtocol {
    pub fn name(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

impl std::str::FromStr for GroupProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "classic" => Ok(GroupProtocol::Classic),
            "consumer" => Ok(GroupProtocol::Consumer),
            other => Err(format!("unknown group protocol {other:?}; use classic or consumer")),
        }
    }
}

impl std::fmt::Display for GroupProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Counters a member keeps for progress displays and tests.
#[derive(Debug, Default)]
pub struct MemberStats {
    pub records: AtomicU64,
    pub applied: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub batches: AtomicU64,
    /// Waiting for the schema registry to learn a batch's schema ids.
    pub registry_stalled: AtomicBool,
    /// Next offset per owned partition after the last batch.
    pub positions: Mutex<BTreeMap<i32, i64>>,
    /// Log end offset per owned partition, refreshed every few seconds.
    pub log_ends: Mutex<BTreeMap<i32, i64>>,
    pub owned: Mutex<BTreeSet<i32>>,
    /// Where a record's time goes inside the member, summed over applied records.
    pub timings: Mutex<Timings>,
}

/// Sums over the records of applied batches, each record counted once, so that dividing by
/// `records` gives what an average record experienced: its age when polled (producer's
/// create time → in the member's hands: produce, replication, fetch, librdkafka's queue),
/// its wait in the member's buffer until its batch started (the batch wait and the poll
/// cycle), and the batch's apply time (one database transaction).
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    pub records: u64,
    pub batches: u64,
    pub age_at_poll_ms: f64,
    pub buffer_wait_ms: f64,
    pub apply_ms: f64,
}

impl Timings {
    /// Per-record means of the records applied between `earlier` and `self`.
    pub fn means_since(&self, earlier: &Timings) -> Option<(f64, f64, f64)> {
        let n = self.records.checked_sub(earlier.records).filter(|n| *n > 0)? as f64;
        Some((
            (self.age_at_poll_ms - earlier.age_at_poll_ms) / n,
            (self.buffer_wait_ms - earlier.buffer_wait_ms) / n,
            (self.apply_ms - earlier.apply_ms) / n,
        ))
    }
}

impl MemberStats {
    /// Sum over owned partitions of log end − next offset, if both are known.
    pub fn lag(&self) -> Option<i64> {
        let positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let ends = self.log_ends.lock().unwrap_or_else(|e| e.into_inner());
        let owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        owned.iter().map(|p| Some((ends.get(p)? - positions.get(p).copied().unwrap_or(0)).max(0))).sum()
    }
}

/// A running member: stop it and wait for it.
pub struct MemberHandle {
    stop: Arc<AtomicBool>,
    done: Option<tokio::sync::oneshot::Receiver<Result<(), ConsumerError>>>,
    pub stats: Arc<MemberStats>,
}

impl MemberHandle {
    /// Asks the member to finish its current batch, leave the group and stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits until the member stopped (by request or error).
    pub async fn wait(&mut self) -> Result<(), ConsumerError> {
        match self.done.take() {
            Some(rx) => rx.await.map_err(|_| ConsumerError::Vanished)?,
            None => Ok(()),
        }
    }

    pub async fn stop(mut self) -> Result<(), ConsumerError> {
        self.request_stop();
        self.wait().await
    }
}

impl Drop for MemberHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Starts a member on its own thread. Must be called from within a tokio runtime.
pub fn run_member(config: MemberConfig, kafka: &KafkaSettings, store: Store) -> Result<MemberHandle, ConsumerError> {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(MemberStats::default());
    let inspector =
        infra::group_inspect::Inspector::new(kafka, Duration::from_secs(5)).map_err(ConsumerError::Inspect)?;
    let context = MemberContext {
        store: store.clone(),
        inspector,
        kafka: kafka.clone(),
        runtime: Handle::current(),
        group: config.group.clone(),
        topic: config.topic.clone(),
        stop: stop.clone(),
        assigned: Mutex::new(BTreeSet::new()),
        assignment_changed: AtomicBool::new(false),
        positioned_at: Mutex::new(BTreeMap::new()),
        log_ends: Mutex::new(BTreeMap::new()),
        incremental: config.group_protocol == GroupProtocol::Consumer,
        access: Default::default(),
    };
    let session = config.session_timeout.as_millis().to_string();
    let heartbeat = (config.session_timeout.as_millis() / 4).to_string();
    let max_poll = config.max_poll_interval.as_millis().to_string();
    let fetch_wait = config.fetch_wait.as_millis().max(1).to_string();
    let mut settings: Vec<(&str, &str)> = vec![("group.protocol", config.group_protocol.name())];
    if config.group_protocol == GroupProtocol::Classic {
        // The consumer protocol rejects these: the broker assigns and keeps the session.
        settings.extend([
            ("partition.assignment.strategy", config.assignment_strategy.as_str()),
            ("session.timeout.ms", session.as_str()),
            ("heartbeat.interval.ms", heartbeat.as_str()),
        ]);
    }
    settings.extend([
        ("group.id", config.group.as_str()),
        // Offsets come from the projection database; Kafka's copy is only for tooling.
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        // No stored offset means "from the beginning", which we set explicitly; an
        // out-of-range stored offset must be loud, not silently reset.
        ("auto.offset.reset", "error"),
        ("isolation.level", "read_committed"),
        ("enable.partition.eof", "false"),
        ("max.poll.interval.ms", max_poll.as_str()),
        ("fetch.wait.max.ms", fetch_wait.as_str()),
        // Let the broker gather up to 64 KiB (or wait `fetch_wait`) before answering a
        // fetch. With librdkafka's default of 1 byte a member at a steady trickle asks again
        // after every record or two: thousands of fetches a second that, on two cores shared
        // with the broker and the database, took P4 (202 → visible) at 1,500 orders/s from
        // p50 35 / p99 99 ms to ~350 / ~650 ms. A backlog fills 64 KiB at once, so catching
        // up is not slowed.
        ("fetch.min.bytes", "65536"),
        // Log ends for lag arrive with these statistics, so the poll loop never blocks
        // on a watermark request (a broker that stalls would stall the member).
        ("statistics.interval.ms", "1000"),
        // Partitions added to the topic are noticed at the next metadata refresh (the
        // classic protocol then rebalances); librdkafka's default is 5 minutes.
        ("topic.metadata.refresh.interval.ms", "10000"),
    ]);
    let consumer: BaseConsumer<MemberContext> = kafka.client_config_with(&settings).create_with_context(context)?;
    consumer.subscribe(&[&config.topic])?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_stats = stats.clone();
    let thread_stop = stop.clone();
    std::thread::Builder::new()
        .name(format!("member-{}", config.group))
        .spawn(move || {
            let result = poll_loop(&consumer, &config, &store, &thread_stop, &thread_stats);
            leave_group(consumer, config.shutdown_deadline);
            let _ = tx.send(result);
        })
        .map_err(ConsumerError::Spawn)?;
    Ok(MemberHandle { stop, done: Some(rx), stats })
}

/// The principal the record's header names (the first such header; see
/// [`schemas::principal_of_header`]).
fn published_by(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<String> {
    use rdkafka::message::{Headers, Message};
    let headers = message.headers()?;
    let header = headers.iter().find(|h| h.key == schemas::PRINCIPAL_HEADER)?;
    schemas::principal_of_header(header.value)
}

fn record_of(message: &rdkafka::message::BorrowedMessage<'_>) -> (LogRecord, Option<i64>) {
    let record = LogRecord {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        timestamp_ms: message.timestamp().to_millis(),
        published_by: published_by(message),
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
            self.age_at_poll_ms += (wall_clock_ms() - created).max(0) as f64;
        }
        self.records.push(record);
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn poll_loop(
    consumer: &BaseConsumer<MemberContext>,
    config: &MemberConfig,
    store: &Store,
    stop: &AtomicBool,
    stats: &MemberStats,
) -> Result<(), ConsumerError> {
    let codec = config.contract.codec().clone();
    let env = BatchEnv { consumer, config, store, codec: &codec, stop, stats };
    let mut reading = Reading::default();
    // At most one batch is applied at a time; while it is, the member reads the next one.
    let mut in_flight: Option<InFlight> = None;
    let result = poll_batches(&env, &mut reading, &mut in_flight);
    // Stopping or failing: a batch still in flight finishes (commits or not) first.
    if let Some(flight) = in_flight.take() {
        finish(&env, flight, &mut reading)?;
    }
    result
}

fn poll_batches(
    env: &BatchEnv<'_>,
    reading: &mut Reading,
    in_flight: &mut Option<InFlight>,
) -> Result<(), ConsumerError> {
    let BatchEnv { consumer, config, store, codec, stop, stats } = *env;
    let context = consumer.context();
    let mut buffer = Buffer {
        records: Vec::with_capacity(config.batch_max),
        started: Instant::now(),
        polled_after_start_ms: 0.0,
        age_at_poll_ms: 0.0,
    };
    let mut lag_at = Instant::now();
    let mut timers_at = Instant::now();
    let mut owned: BTreeSet<i32> = BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        let wait = if buffer.records.is_empty() {
            config.batch_wait.max(Duration::from_millis(100))
        } else if in_flight.is_some() {
            // The next batch goes when this one is done; meanwhile it grows, so a database
            // slower than the log gets larger batches. Look at the batch in flight often.
            Duration::from_millis(1)
        } else {
            // Until the batch is due: librdkafka hands over a record the moment it has one.
            config.batch_wait.saturating_sub(buffer.started.elapsed())
        };
        // Rebalance callbacks run inside `poll`; a record it returns belongs to the
        // assignment as it is after them, so handle the change before buffering it.
        let polled = consumer.poll(wait).map(|r| r.map(|m| record_of(&m)));
        // One clock reading per record: on some virtual machines reading it is a system call.
        let now = Instant::now();
        if context.assignment_changed.swap(false, Ordering::SeqCst) {
            // The batch in flight finishes under the assignment it was read with; then
            // the buffer keeps only what this member still owns.
            if let Some(flight) = in_flight.take() {
                finish(env, flight, reading)?;
                forget_rewound(&mut buffer.records, reading);
            }
            owned = context.owned();
            buffer.records.retain(|r| owned.contains(&r.partition));
            reading.keep_only(&owned);
            for (p, start) in std::mem::take(&mut *context.positioned_at.lock().unwrap_or_else(|e| e.into_inner())) {
                // A re-assigned partition starts over from its stored offset.
                buffer.records.retain(|r| r.partition != p);
                reading.positioned(p, start);
            }
            *stats.owned.lock().unwrap_or_else(|e| e.into_inner()) = owned.clone();
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
            ))) => consumer.context().refuse_out_of_range(consumer),
            // The broker refuses this member's credentials or ACLs: no retry can fix that.
            Some(Err(e)) if e.rdkafka_error_code().is_some_and(infra::access_check::access_denied) => {
                return Err(ConsumerError::Denied(e.to_string()));
            }
            Some(Err(e)) => {
                tracing::warn!(error = &e as &dyn std::error::Error, group = %config.group, "consume error")
            }
            None => {}
        }
        // A refusal comes with errors or silence, never between records.
        if !got_record {
            if let Some(refusal) = consumer.context().access.refusal() {
                return Err(ConsumerError::Denied(refusal));
            }
        }
        let full = buffer.records.len() >= config.batch_max;
        let due = !buffer.records.is_empty() && now.saturating_duration_since(buffer.started) >= config.batch_wait;
        // A batch in flight that is done is finished first.
        if in_flight.as_ref().is_some_and(|f| f.task.is_finished()) {
            if let Some(flight) = in_flight.take() {
                finish(env, flight, reading)?;
                forget_rewound(&mut buffer.records, reading);
            }
        }
        // The next batch is cut when it is full, or due with nothing in flight (a due batch
        // grows while one is in flight: a database slower than the log gets larger ones).
        if full || (due && in_flight.is_none()) {
            let batch_start = Instant::now();
            let waited_ms = buffer.records.len() as f64
                * batch_start.saturating_duration_since(buffer.started).as_secs_f64()
                * 1000.0
                - buffer.polled_after_start_ms;
            let buffer_timing = (waited_ms.max(0.0), buffer.age_at_poll_ms);
            let mut records = std::mem::replace(&mut buffer.records, Vec::with_capacity(config.batch_max));
            // Keep each partition's records in offset order (they arrive that way).
            records.sort_by_key(|r| (r.partition, r.offset));
            if !resolve_schemas(env, &records) {
                // Stopping while the registry is away: nothing was applied; the records
                // are read again by the partitions' next owner.
                return Ok(());
            }
            // Decoded while the batch before it may still be in the database.
            let mut decoded = config.work.decode(codec, &records);
            if let Some(flight) = in_flight.take() {
                finish(env, flight, reading)?;
                if !reading.rewound.is_empty() {
                    // Rare: that batch rewound partitions whose later records are in this one.
                    forget_rewound(&mut records, reading);
                    decoded = config.work.decode(codec, &records);
                }
            }
            if tracing::enabled!(tracing::Level::DEBUG) {
                let mut spans: BTreeMap<i32, (i64, i64, usize)> = BTreeMap::new();
                for r in records.iter() {
                    let e = spans.entry(r.partition).or_insert((r.offset, r.offset, 0));
                    e.1 = r.offset;
                    e.2 += 1;
                }
                tracing::debug!(group = %config.group, ?spans, read_from = ?reading.read_from, "batch");
            }
            if !records.is_empty() {
                *in_flight = Some(dispatch(env, records, decoded, reading, batch_start, buffer_timing));
            }
        }
        if now.saturating_duration_since(lag_at) >= Duration::from_secs(1) {
            lag_at = now;
            refresh_lag(consumer, config, stats);
        }
        if now.saturating_duration_since(timers_at) >= TIMER_EVERY {
            timers_at = now;
            if matches!(config.work, Work::Decide(ProcessKind::OrderProcess, _)) {
                // Timers fire between batches, as they always did.
                if let Some(flight) = in_flight.take() {
                    finish(env, flight, reading)?;
                    forget_rewound(&mut buffer.records, reading);
                }
            }
            fire_timers(consumer, config, store, codec, &owned);
        }
    }
    Ok(())
}

/// Drops the buffered records of partitions the last batch rewound: the consumer reads
/// them again from the stored offset.
fn forget_rewound(buffer: &mut Vec<LogRecord>, reading: &mut Reading) {
    for p in std::mem::take(&mut reading.rewound) {
        buffer.retain(|r| r.partition != p);
    }
}

/// A batch being applied on the runtime while the member reads the next one.
struct InFlight {
    /// The batch's records come back with its result.
    task: tokio::task::JoinHandle<(Vec<LogRecord>, Result<BatchOutcome, StoreError>)>,
    started: Instant,
    /// The records' summed buffer wait and age at poll (see [`Timings`]).
    buffer_timing: (f64, f64),
}

/// Starts applying `records` on the runtime: decoding, folding and the database round
/// trips of this batch overlap with the member polling the next one. Batches still apply
/// one at a time, in order: the next starts only after this one [`finish`]ed.
fn dispatch(
    env: &BatchEnv<'_>,
    records: Vec<LogRecord>,
    decoded: Option<DecodedRecords>,
    reading: &Reading,
    started: Instant,
    buffer_timing: (f64, f64),
) -> InFlight {
    let (work, store, codec) = (env.config.work.clone(), env.store.clone(), env.codec.clone());
    let (group, topic) = (env.config.group.clone(), env.config.topic.clone());
    let read_from = reading.read_from.clone();
    let task = env.consumer.context().runtime.spawn(async move {
        let batch = Batch { group: &group, topic: &topic, records: &records, read_from: &read_from };
        let result = match (&work, decoded) {
            (Work::Project(kind), Some(decoded)) => kind.apply_decoded_batch(&store, &batch, decoded).await,
            _ => work.apply(&store, &batch, &codec).await,
        };
        (records, result)
    });
    InFlight { task, started, buffer_timing }
}

/// Waits for the batch in flight and does the bookkeeping of a committed batch. A batch
/// that failed is applied again the careful way ([`apply_with_retry`]: backoff while the
/// database is away, halving to find a record it refuses): its transaction rolled back,
/// so nothing of it is in the database.
fn finish(env: &BatchEnv<'_>, flight: InFlight, reading: &mut Reading) -> Result<(), ConsumerError> {
    let InFlight { task, started, buffer_timing } = flight;
    let (records, result) = env.consumer.context().runtime.block_on(task).map_err(ConsumerError::BatchTask)?;
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
                tracing::warn!(error = &e as &dyn std::error::Error, group = %env.config.group, "batch failed; retrying");
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

/// How often the order process looks for due payment timers of its partitions.
const TIMER_EVERY: Duration = Duration::from_millis(250);

/// Fires the due timers of the partitions this member owns (order process only), on the
/// member's thread, so never during one of its batches; the store serializes it with
/// other members' batches through the offset rows.
fn fire_timers(
    consumer: &BaseConsumer<MemberContext>,
    config: &MemberConfig,
    store: &Store,
    codec: &Codec,
    owned: &BTreeSet<i32>,
) {
    let Work::Decide(ProcessKind::OrderProcess, settings) = &config.work else { return };
    let partitions: Vec<i32> = owned.iter().copied().collect();
    let fired = consumer.context().runtime.block_on(store.fire_due_timers(
        &config.group,
        &config.topic,
        &partitions,
        codec,
        settings,
    ));
    match fired {
        Ok(0) => {}
        Ok(n) => {
            m::timers_fired(&config.group, n);
            tracing::info!(group = %config.group, timers = n, "payment timers fired");
            if let Some(notify) = &config.outbox_written {
                notify.notify_one();
            }
        }
        Err(e) => {
            tracing::warn!(error = &e as &dyn std::error::Error, group = %config.group, "firing timers failed; will try again")
        }
    }
}

/// What applying a batch needs from the member.
struct BatchEnv<'a> {
    consumer: &'a BaseConsumer<MemberContext>,
    config: &'a MemberConfig,
    store: &'a Store,
    codec: &'a Codec,
    stop: &'a AtomicBool,
    stats: &'a MemberStats,
}

/// Learns the schema ids of `batch` the codec does not know from the registry, before the
/// batch is decoded. A registry that does not answer (or answers with an error) is waited
/// for as long as it takes, never a reason to park a record: the member stalls, says so
/// (a warning, then an error every 30 s, `orderflow_schema_registry_failures_total`, the
/// lag growing) and goes on with the same records when the registry is back. Returns
/// false if the member is stopping meanwhile.
fn resolve_schemas(env: &BatchEnv<'_>, batch: &[LogRecord]) -> bool {
    let config = env.config;
    if config.contract.registry().is_none() {
        return true;
    }
    let runtime = &env.consumer.context().runtime;
    let mut delay = Duration::from_millis(100);
    let failing_since = Instant::now();
    let mut last_error_log: Option<Instant> = None;
    loop {
        match runtime.block_on(config.contract.resolve(batch.iter().filter_map(|r| r.payload.as_deref()))) {
            Ok(_) => {
                if last_error_log.is_some() {
                    tracing::info!(group = %config.group, stalled_for_s = failing_since.elapsed().as_secs(),
                        "the schema registry answers again; going on");
                }
                m::registry_stalled(&config.group, false);
                env.stats.registry_stalled.store(false, Ordering::Relaxed);
                return true;
            }
            Err(e) => {
                m::registry_failure(&config.group);
                m::registry_stalled(&config.group, true);
                env.stats.registry_stalled.store(true, Ordering::Relaxed);
                let error = &e as &dyn std::error::Error;
                match last_error_log {
                    None => tracing::warn!(error, group = %config.group,
                        "cannot learn this batch's schema ids from the registry; waiting for it, nothing is parked"),
                    Some(at) if at.elapsed() >= Duration::from_secs(30) => tracing::error!(
                        error, group = %config.group, stalled_for_s = failing_since.elapsed().as_secs(),
                        "the schema registry is still away; the group is stalled, nothing is lost"
                    ),
                    Some(_) => {}
                }
                if last_error_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
                    last_error_log = Some(Instant::now());
                }
                if env.stop.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Applies `batch`, retrying what may pass later (the database down, a lock timeout)
/// with backoff for as long as it takes, and setting aside what never will: when the
/// database refuses a value a record carries, the batch is halved until that record is
/// found, and it alone is parked with the database's reason.
fn apply_with_retry(env: &BatchEnv<'_>, batch: &[LogRecord], reading: &mut Reading) -> Result<(), ConsumerError> {
    let BatchEnv { consumer, config, store, codec, .. } = *env;
    let runtime = &consumer.context().runtime;
    let started = Instant::now();
    let applied = with_backoff(env, || {
        let records =
            Batch { group: &config.group, topic: &config.topic, records: batch, read_from: &reading.read_from };
        runtime.block_on(config.work.apply(store, &records, codec))
    })?;
    let outcome = match applied {
        Some(Ok(outcome)) => outcome,
        Some(Err(refused)) if batch.len() > 1 => {
            tracing::warn!(error = &refused as &dyn std::error::Error, group = %config.group, records = batch.len(),
                "the database refused a value in this batch; applying it in halves to find the record");
            let (first, second) = batch.split_at(batch.len() / 2);
            apply_with_retry(env, first, reading)?;
            return apply_with_retry(env, second, reading);
        }
        Some(Err(refused)) => {
            let reason = infra::error_chain(&refused);
            let record = &batch[0];
            tracing::error!(group = %config.group, partition = record.partition, offset = record.offset, %reason,
                "the database refuses this record; parking it");
            m::record_refused(&config.group);
            let parked = with_backoff(env, || {
                let records =
                    Batch { group: &config.group, topic: &config.topic, records: batch, read_from: &reading.read_from };
                runtime.block_on(store.park_refused(&records, codec, &reason))
            })?;
            match parked {
                Some(Ok(outcome)) => outcome,
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            }
        }
        // Stopping: the batch was not applied and will be read again by the next owner.
        None => return Ok(()),
    };
    record_applied(env, batch, reading, &outcome, started);
    if let Some(notify) = &config.outbox_written {
        notify.notify_one();
    }
    Ok(())
}

/// Runs `attempt` until it succeeds or fails in a way retrying cannot fix: `Some(Ok)`, or
/// `Some(Err)` for a refusal of the records' content; `None` once the member is stopping.
/// A database that stays down is retried without end, loudly: a warning on the first
/// failure, an error every 30 s while it lasts, and the retry counter.
fn with_backoff<T>(
    env: &BatchEnv<'_>,
    mut attempt: impl FnMut() -> Result<T, StoreError>,
) -> Result<Option<Result<T, StoreError>>, ConsumerError> {
    let mut delay = Duration::from_millis(100);
    let failing_since = Instant::now();
    let mut last_error_log: Option<Instant> = None;
    loop {
        match attempt() {
            Ok(value) => return Ok(Some(Ok(value))),
            Err(e) if e.refuses_content() => return Ok(Some(Err(e))),
            Err(e) if e.is_retryable() => {
                m::batch_retry(&env.config.group);
                let error = &e as &dyn std::error::Error;
                match last_error_log {
                    None => tracing::warn!(error, group = %env.config.group, "batch failed; retrying"),
                    Some(at) if at.elapsed() >= Duration::from_secs(30) => tracing::error!(
                        error, group = %env.config.group, failing_for_s = failing_since.elapsed().as_secs(),
                        "the projection database keeps failing; still retrying, nothing is lost"
                    ),
                    Some(_) => tracing::debug!(error, group = %env.config.group, "batch failed; retrying"),
                }
                if last_error_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
                    last_error_log = Some(Instant::now());
                }
                if env.stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Bookkeeping after a batch committed: positions, counters, rewinds, the offsets' copy
/// in Kafka.
fn record_applied(
    env: &BatchEnv<'_>,
    batch: &[LogRecord],
    reading: &mut Reading,
    outcome: &projections::store::BatchOutcome,
    started: Instant,
) {
    let BatchEnv { consumer, config, stats, .. } = *env;
    // This consumer has now read each partition up to its last record.
    for r in batch {
        reading.read_from.insert(r.partition, r.offset + 1);
    }
    m::batch_done(&config.group, batch.len(), outcome, started.elapsed().as_secs_f64());
    stats.records.fetch_add(batch.len() as u64, Ordering::Relaxed);
    stats.applied.fetch_add(outcome.applied as u64, Ordering::Relaxed);
    stats.dead_lettered.fetch_add(outcome.dead_lettered as u64, Ordering::Relaxed);
    stats.batches.fetch_add(1, Ordering::Relaxed);
    for (p, offset) in &outcome.rewind {
        m::rewind(&config.group);
        reading.positioned(*p, Some(*offset));
        reading.rewound.insert(*p);
        if let Err(e) = consumer.seek(&config.topic, *p, Offset::Offset(*offset), Duration::from_secs(5)) {
            tracing::error!(error = &e as &dyn std::error::Error, partition = p, "cannot rewind to the stored offset");
        }
    }
    if outcome.already_applied > 0 {
        tracing::info!(group = %config.group, records = outcome.already_applied, "records were already applied (fenced)");
    }
    let mut positions = stats.positions.lock().unwrap_or_else(|e| e.into_inner());
    let mut committed = TopicPartitionList::new();
    for (p, next) in &outcome.next_offsets {
        positions.insert(*p, *next);
        let _ = committed.add_partition_offset(&config.topic, *p, Offset::Offset(*next));
    }
    // A copy for Kafka's tooling and autoscalers, after the database commit; never read back.
    if let Err(e) = consumer.commit(&committed, CommitMode::Async) {
        tracing::debug!(error = &e as &dyn std::error::Error, "could not copy offsets to Kafka");
    }
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
            if let Some(next) = positions.get(&p) {
                m::lag(config.work.name(), &config.group, p, (high - next).max(0));
            }
        }
    }
    *stats.log_ends.lock().unwrap_or_else(|e| e.into_inner()) = ends;
}

/// Leaves the group so others take over promptly, without hanging when the broker is
/// gone: closing runs on a helper thread and is abandoned after the deadline.
fn leave_group(consumer: BaseConsumer<MemberContext>, deadline: Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new().name("member-close".into()).spawn(move || {
        consumer.unsubscribe();
        drop(consumer);
        let _ = tx.send(());
    });
    if rx.recv_timeout(deadline).is_err() {
        tracing::warn!(?deadline, "leaving the group took too long; abandoning the close");
    }
}

/// Where this member's consumer reads each partition from, so that a batch can claim
/// "these are all the records from offset N on" only when that is true: the store refuses
/// a partition whose batch would start above its stored offset (a member positioned
/// elsewhere than the database says must not skip records) and the member re-reads it.
/// Offsets may still have gaps (transaction markers, compaction): a gap read across is fine.
#[derive(Debug, Default)]
struct Reading {
    /// Per partition: the offset from which the buffered and following records are
    /// contiguous. Absent: from the beginning of the log.
    read_from: BTreeMap<i32, i64>,
    /// Partitions a batch rewound since the buffer was last cleaned of them.
    rewound: BTreeSet<i32>,
}

impl Reading {
    fn positioned(&mut self, partition: i32, at: Option<i64>) {
        match at {
            Some(offset) => self.read_from.insert(partition, offset),
            None => self.read_from.remove(&partition),
        };
    }

    fn keep_only(&mut self, owned: &BTreeSet<i32>) {
        self.read_from.retain(|p, _| owned.contains(p));
    }
}
