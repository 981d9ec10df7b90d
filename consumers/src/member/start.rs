//! Starting a member: its consumer's settings, its thread, and leaving the group cleanly.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use infra::KafkaSettings;
use projections::store::{Batches, Store};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::runtime::Handle;

use super::causal::Causes;
use super::config::{GroupProtocol, MemberConfig};
use super::poll::poll_loop;
use super::stats::{MemberHandle, MemberStats};
use crate::context::MemberContext;
use crate::error::ConsumerError;

/// Starts a member: one consumer on a thread of its own per topic its group reads (see
/// [`projections::registry::GroupKind::reads`]), all in the group, sharing the member's
/// counters; and, for a projection, the same for each region in `config.mirrors`, reading
/// that region's copies in its own group. Must be called from within a tokio runtime.
pub fn run_member(config: MemberConfig, kafka: &KafkaSettings, store: Store) -> Result<MemberHandle, ConsumerError> {
    let batches = store.batches().deciding(config.decisions.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(MemberStats::default());
    let (tx, done) = tokio::sync::mpsc::unbounded_channel();
    let mut handle = MemberHandle { stop: stop.clone(), done, running: 0, stats: stats.clone() };
    // A process decides on its own region's log alone: another region's orders are that
    // region's to decide.
    let mirrors = match config.kind {
        projections::registry::GroupKind::Projection(_) => config.mirrors.clone(),
        projections::registry::GroupKind::Process(_) => Vec::new(),
    };
    let logs = std::iter::once(config.clone()).chain(mirrors.into_iter().map(|region| config.mirroring(region)));
    for log in logs {
        for topic in log.topics() {
            let config = MemberConfig { topic, ..log.clone() };
            start_consumer(config, kafka, batches.clone(), stop.clone(), stats.clone(), tx.clone())?;
            handle.running += 1;
        }
    }
    Ok(handle)
}

/// One consumer of the member, for `config.topic`, on its own thread; its result goes to
/// `done` when it ends.
fn start_consumer(
    config: MemberConfig,
    kafka: &KafkaSettings,
    batches: Batches,
    stop: Arc<AtomicBool>,
    stats: Arc<MemberStats>,
    done: tokio::sync::mpsc::UnboundedSender<Result<(), ConsumerError>>,
) -> Result<(), ConsumerError> {
    let inspector =
        infra::group_inspect::Inspector::new(kafka, Duration::from_secs(5)).map_err(ConsumerError::Inspect)?;
    let context = MemberContext {
        batches: batches.clone(),
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
    let instance = config.group_instance_id();
    if let Some(instance) = &instance {
        settings.push(("group.instance.id", instance.as_str()));
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
        // Bound what librdkafka prefetches ahead of the poll loop. The bound is per
        // partition (its default 64 MiB each): a member far behind on 12 partitions held
        // ~200 MiB of prefetched records at 16 MiB, whatever the log's size past a few
        // seconds of it. 4 MiB per partition is still over a second of reading ahead; a
        // partition whose queue is full is fetched again after 20 ms, not librdkafka's
        // default second (with which a member far behind read at a fifth of its speed).
        ("queued.max.messages.kbytes", "4096"),
        ("fetch.queue.backoff.ms", "20"),
        // Log ends for lag arrive with these statistics, so the poll loop never blocks
        // on a watermark request (a broker that stalls would stall the member).
        ("statistics.interval.ms", "1000"),
        // Partitions added to the topic are noticed at the next metadata refresh (the
        // classic protocol then rebalances); librdkafka's default is 5 minutes.
        ("topic.metadata.refresh.interval.ms", "10000"),
    ]);
    let consumer: BaseConsumer<MemberContext> = kafka.client_config_with(&settings).create_with_context(context)?;
    consumer.subscribe(&[&config.topic])?;
    let causes = match config.kind.waits_for(config.role()) {
        Some(role) => Some(Causes {
            inspector: Arc::new(
                infra::group_inspect::Inspector::new(kafka, Duration::from_secs(5)).map_err(ConsumerError::Inspect)?,
            ),
            group: config.group.clone(),
            topic: role.name(&config.decisions.orders_topic),
        }),
        None => None,
    };
    std::thread::Builder::new()
        .name(format!("member-{}", config.group))
        .spawn(move || {
            let result = poll_loop(&consumer, &config, &batches, &stop, &stats, causes.as_ref());
            leave_group(consumer, config.shutdown_deadline);
            let _ = done.send(result);
        })
        .map_err(ConsumerError::Spawn)?;
    Ok(())
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
        tracing::warn!(
            ?deadline,
            "Leaving the group took too long. Abandoning the close; the broker ends the session."
        );
    }
}
