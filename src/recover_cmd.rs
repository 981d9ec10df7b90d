//! `orderflow rebuild stock|order-process|checkout-keys`: state that is not a projection,
//! rebuilt from the log. Unlike a projection's shadow rebuild, these read the log once,
//! outside any consumer group, to the ends it had when they started, and install the
//! result in one transaction:
//!
//! - a process's state (levels and holds, or flows and timers) from its inputs and the
//!   decisions it published ([`projections::process::recover`]); its group resumes where
//!   the rebuild stopped reading. A process decides: two generations of one could not
//!   run side by side without one deciding what the other already had, so the group must
//!   have no members while it runs (it refuses otherwise).
//! - the checkout's keys and order owners from the records it appended
//!   ([`producers::checkout::rebuild`]); checkouts may keep running.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use infra::log_reader::{self, StoredRecord};
use projections::process::recover::{self, LoggedInput, Published};
use projections::registry::ProcessKind;
use projections::store::{ProcessSettings, Recovered, Store};
use schemas::TopicRole;

/// How long the log may stay silent while a rebuild still expects records from it.
const STALL: Duration = Duration::from_secs(30);

/// Every record of `topics` up to where each partition ends now (the ends taken first).
pub(crate) async fn read_log(
    kafka: &infra::KafkaSettings,
    topics: Vec<String>,
) -> anyhow::Result<(BTreeMap<(String, i32), i64>, Vec<StoredRecord>)> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let ends = log_reader::ends_now(&kafka, &topics, Duration::from_secs(10))?;
        let mut records = Vec::new();
        log_reader::read_to(&kafka, &ends, STALL, |r| records.push(r))?;
        Ok((ends, records))
    })
    .await?
}

/// Waits until `group` has no members at the broker on any of `topics` (killed members
/// leave when their session times out); refuses if some are still there after `within`.
async fn wait_until_stopped(
    kafka: &infra::KafkaSettings,
    group: &str,
    topics: &[String],
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let mut told = false;
    loop {
        let busy = crate::kit::members_at_broker(kafka, group, topics).await?;
        if busy == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the group {group} is running ({busy} member(s) at the broker after {within:?}): stop its \
                 members first; a process's state is rebuilt only while nobody decides with it"
            );
        }
        if !told {
            eprintln!("waiting for the {busy} member(s) of {group} to leave it (a killed member leaves when its session times out)");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Rebuilds `kind`'s state from the log and installs it; returns the report.
pub async fn rebuild_process(
    kind: ProcessKind,
    store: &Store,
    kafka: &infra::KafkaSettings,
    contract: &infra::schema_registry::Contract,
    settings: &ProcessSettings,
    stopped_within: Duration,
) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let orders_topic = &settings.orders_topic;
    let reads = projections::registry::GroupKind::from(kind).topics(orders_topic);
    wait_until_stopped(kafka, &store.group(kind), &reads, stopped_within).await?;
    let (ends, records) = read_log(kafka, schemas::pipeline_topics(orders_topic)).await?;
    contract.resolve(records.iter().filter_map(|r| r.payload.as_deref())).await?;
    let codec = contract.codec();
    let mut inputs = Vec::new();
    let mut published = Published::default();
    for record in &records {
        if reads.contains(&record.topic) {
            if let Some(event) = store.operations().decodable_input(
                kind,
                codec,
                &record.topic,
                record.key.as_deref(),
                record.payload.as_deref(),
            ) {
                let timestamp_ms = record.timestamp_ms.unwrap_or_default();
                inputs.push(LoggedInput { partition: record.partition, timestamp_ms, event });
            }
        }
        // What the processes published: only from the topics they alone write (and the
        // adjustments an order process forwards there).
        let role = TopicRole::by_name(&record.topic);
        if role != TopicRole::Orders {
            if let Some(event) = record.payload.as_deref().and_then(|p| codec.decode(p).ok()) {
                if role.trusts(event.kind()) {
                    published.insert(event);
                }
            }
        }
    }
    let inputs = recover::merge_by_time(inputs);
    let recovered = match kind {
        ProcessKind::OrderProcess => {
            Recovered::Orders(recover::recover_orders(&inputs, &published, settings.payment_timeout))
        }
        ProcessKind::Stock => Recovered::Stock(recover::recover_stock(&inputs, &published)),
    };
    for event in recovered.missing() {
        tracing::info!(kind = ?event.kind(), event_id = %event.envelope().event_id, order = ?event.order_id(),
            "A decision was not on the log (the lost outbox's tail). It goes into the outbox again, with the id it had.");
    }
    let ends: BTreeMap<(String, i32), i64> = ends.into_iter().filter(|((topic, _), _)| reads.contains(topic)).collect();
    let restored = store.operations().restore_process(&recovered, &ends, codec, settings).await?;
    Ok(serde_json::json!({"event": "restored", "process": kind.name(), "records_read": records.len(),
        "inputs": inputs.len(), "orders": restored.orders, "skus": restored.skus, "holds": restored.holds,
        "republished": restored.republished, "seconds": started.elapsed().as_secs_f64()}))
}

/// Rebuilds the checkout's keys and order owners from the records it appended.
pub async fn rebuild_checkout_keys(
    database_url: &str,
    kafka: &infra::KafkaSettings,
    contract: &infra::schema_registry::Contract,
    orders_topic: &str,
    home: Option<&schemas::Region>,
) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let keys_store = producers::idempotency::IdempotencyStore::connect(database_url, Duration::from_secs(10))
        .await
        .context("connecting to the checkout's key store")?;
    let written_by_checkout: Vec<String> = TopicRole::ALL
        .into_iter()
        .filter(|role| role.written_by_callers())
        .map(|role| role.name(orders_topic))
        .collect();
    let (_, records) = read_log(kafka, written_by_checkout).await?;
    contract.resolve(records.iter().filter_map(|r| r.payload.as_deref())).await?;
    let (mut keys, mut owners) = (Vec::new(), Vec::new());
    for record in &records {
        let Some(event) = record.payload.as_deref().and_then(|p| contract.codec().decode(p).ok()) else { continue };
        let (key, owner) = producers::checkout::rebuild::rows_of(record, &event, orders_topic, home);
        keys.extend(key);
        owners.extend(owner);
    }
    let (keys_written, owners_written) = keys_store.restore(&keys, &owners).await?;
    Ok(serde_json::json!({"event": "restored", "state": "checkout-keys", "records_read": records.len(),
        "keys_found": keys.len(), "keys_written": keys_written, "owners_found": owners.len(),
        "owners_written": owners_written, "seconds": started.elapsed().as_secs_f64()}))
}
