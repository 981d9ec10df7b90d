//! `after=<partition:offset>`: wait until each projection a query reads has applied the
//! record at that position, i.e. its live group's stored next offset for the partition
//! is past it. Bounded: past `read_wait` the answer is 503 with where the projection is,
//! never stale data presented as current. A partition whose group refused its stored
//! offset (outside the log) is never caught up: 503 at once, with the reason. A partition
//! the topic does not have is `404 unknown_partition` at once: the position names nothing
//! (and no document can bound it: the partition count is the broker's, and it grows).
//!
//! In a region, a position names its region's log
//! (`<region>:<partition>:<offset>:<timestamp ms>:<event id>`). Read back in another region
//! it names a record of that region's copy, whose offsets are its own: the record is found
//! there by its timestamp and event id (`orderflow-event-id` header), then the mirror's
//! group is waited for. A record the copy does not hold within the read wait is `503
//! not_replicated`: never an answer from before it.
//!
//! Waiting costs the database the same whether one reader waits or fifty: one poller per
//! consumer group reads the group's stored offsets every [`POLL_EVERY`] while anyone waits
//! on it, and every waiter watches what it read ([`OffsetWatch`]).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use projections::store::Reads;
use projections::ProjectionKind;
use serde_json::json;
use tokio::sync::watch;

use super::params::{After, Origin};
use super::{read_failed, ApiError, ApiState};

/// How often a group's stored offsets are read while someone waits on them.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// How long the topic's partition count is trusted before it is read again.
const PARTITIONS_FOR: Duration = Duration::from_secs(10);

pub async fn wait_applied(
    state: &ApiState,
    projections: &[ProjectionKind],
    after: Option<After>,
) -> Result<(), ApiError> {
    let Some(after) = after else { return Ok(()) };
    let deadline = Instant::now() + state.read_wait;
    let elsewhere = after.origin.as_ref().filter(|origin| Some(&origin.region) != state.region.as_ref());
    let (source, topic, offset) = match elsewhere {
        None => {
            refuse_unknown_partition(state, &after).await?;
            (None, state.topic.clone(), after.offset)
        }
        Some(origin) => {
            if !state.mirrors.contains(&origin.region) {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_region",
                    format!("this position is of region {}, whose log this region does not copy", origin.region),
                )
                .with("parameter", "after"));
            }
            let topic = origin.region.mirrored(&state.topic);
            (Some(&origin.region), topic.clone(), find_copy(state, &topic, after.partition, origin, deadline).await?)
        }
    };
    // A position names a caller's record on the orders topic: a projection that reads
    // only the processes' decisions (the inventory) holds nothing of it to wait for.
    let readers = projections.iter().filter(|p| p.reads().contains(&schemas::TopicRole::Orders));
    for projection in readers {
        // Resolved for each projection: a rebuild may switch the live group while we wait.
        let live = state.reads.live_projection(*projection).await.map_err(read_failed)?;
        let group =
            source.map_or(live.group.clone(), |region| projections::registry::mirror_group(&live.group, region));
        wait_group(state, *projection, &group, &topic, after.partition, offset, deadline).await?;
    }
    Ok(())
}

/// `404 unknown_partition` for a partition the topic does not have.
async fn refuse_unknown_partition(state: &ApiState, after: &After) -> Result<(), ApiError> {
    if let Some(partitions) = state.partitions.known(state).await {
        if !partitions.contains(&after.partition) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_partition",
                format!("the topic has no partition {} (it has {})", after.partition, partitions.len()),
            )
            .with("parameter", "after")
            .with("partitions", partitions.len()));
        }
    }
    Ok(())
}

/// The offset of `origin`'s record in this region's copy `topic`, found by its timestamp
/// and event id before `deadline`; else `503 not_replicated`.
async fn find_copy(
    state: &ApiState,
    topic: &str,
    partition: i32,
    origin: &Origin,
    deadline: Instant,
) -> Result<i64, ApiError> {
    let (kafka, name, event_id) = (state.kafka.clone(), topic.to_string(), origin.event_id.to_string());
    let timestamp_ms = origin.timestamp_ms;
    let found = tokio::task::spawn_blocking(move || {
        infra::group_inspect::Inspector::find_by_header(
            &kafka,
            &name,
            partition,
            timestamp_ms,
            (schemas::EVENT_ID_HEADER, event_id.as_bytes()),
            deadline,
        )
    })
    .await;
    match found {
        Ok(Ok(Some(offset))) => Ok(offset),
        Ok(Ok(None)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_replicated",
            format!(
                "this region's copy of region {}'s log does not hold that record yet (waited {:?}); retry later, or read in region {}",
                origin.region, state.read_wait, origin.region
            ),
        )
        .with("region", origin.region.as_str())
        .with("topic", topic)
        .with("partition", partition)),
        Ok(Err(e)) => {
            tracing::warn!(error = &e as &dyn std::error::Error, topic, "Cannot look for a record in the copy. Answering 503.");
            Err(ApiError::unavailable("the broker did not answer while looking for the record in this region's copy"))
        }
        Err(_) => Err(ApiError::unavailable("looking for the record in this region's copy failed")),
    }
}

/// Waits until `group` has applied `topic`/`partition` past `offset`, or answers 503.
async fn wait_group(
    state: &ApiState,
    projection: ProjectionKind,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    deadline: Instant,
) -> Result<(), ApiError> {
    let faults = state.reads.offset_faults(group, topic, Some(partition)).await.map_err(read_failed)?;
    if let Some(fault) = faults.first() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "offsets_refused", fault.reason())
            .with("projection", projection.name())
            .with("group", group)
            .with("partition", partition)
            .with("stored_offset", fault.stored_offset)
            .with("log_start", fault.log_start)
            .with("log_end", fault.log_end));
    }
    let mut offsets = state.offsets.subscribe(&state.reads, group, topic);
    let past = |offsets: &Polled| offsets.next.get(&partition).is_some_and(|n| *n > offset);
    let timed_out = tokio::time::timeout_at(deadline.into(), offsets.wait_for(|o| past(o) || o.failed)).await.is_err();
    let polled = offsets.borrow().clone();
    if polled.failed && !past(&polled) {
        return Err(ApiError::unavailable("the projection database did not answer"));
    }
    if timed_out || !past(&polled) {
        let next = polled.next.get(&partition).copied();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_caught_up",
            format!(
                "the {projection} projection has not applied {topic} {partition}:{offset} within {:?}; retry later",
                state.read_wait
            ),
        )
        .with("projection", projection.name())
        .with("group", group)
        .with("partition", partition)
        .with("wanted_offset", offset)
        .with("applied_up_to", json!(next.map(|n| n - 1))));
    }
    Ok(())
}

/// What a group's poller read last.
#[derive(Debug, Clone, Default)]
struct Polled {
    next: BTreeMap<i32, i64>,
    /// The last read failed (the database did not answer).
    failed: bool,
}

/// One poller per consumer group, shared by every request waiting on it.
#[derive(Default)]
pub struct OffsetWatch {
    groups: Arc<Mutex<HashMap<String, watch::Sender<Polled>>>>,
}

impl OffsetWatch {
    /// A watch of `group`'s stored offsets, starting its poller if nobody watches the group
    /// yet. The poller ends when the last watcher is gone; both happen under one lock, so a
    /// new watcher never joins a poller that is ending.
    fn subscribe(&self, reads: &Reads, group: &str, topic: &str) -> watch::Receiver<Polled> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = groups.get(group) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(Polled::default());
        groups.insert(group.to_string(), sender.clone());
        let poller = Poller { reads: reads.clone(), group: group.to_string(), topic: topic.to_string(), sender };
        tokio::spawn(poller.run(self.groups.clone()));
        receiver
    }
}

struct Poller {
    reads: Reads,
    group: String,
    topic: String,
    sender: watch::Sender<Polled>,
}

impl Poller {
    /// Reads the group's stored offsets (every partition) until nobody watches them.
    async fn run(self, groups: Arc<Mutex<HashMap<String, watch::Sender<Polled>>>>) {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let polled = match self.reads.group_offsets(&self.group, &self.topic).await {
                Ok(rows) => Polled { next: rows.into_iter().collect(), failed: false },
                Err(e) => {
                    tracing::warn!(error = &e as &dyn std::error::Error, group = %self.group,
                        "Reading stored offsets for waiting readers failed. They are answered 503.");
                    Polled { next: BTreeMap::new(), failed: true }
                }
            };
            self.sender.send_replace(polled);
            let mut groups = groups.lock().unwrap_or_else(|e| e.into_inner());
            if self.sender.is_closed() {
                groups.remove(&self.group);
                return;
            }
        }
    }
}

/// The topic's partitions, read from the broker now and then.
#[derive(Default)]
pub struct Partitions {
    known: tokio::sync::Mutex<Option<(Instant, BTreeSet<i32>)>>,
}

impl Partitions {
    /// The partitions the topic has, if the broker can say (without a broker, `None`: a
    /// position is then only bounded by the read wait).
    async fn known(&self, state: &ApiState) -> Option<BTreeSet<i32>> {
        let inspector = state.inspector.clone()?;
        let mut known = self.known.lock().await;
        if let Some((at, partitions)) = known.as_ref() {
            if at.elapsed() < PARTITIONS_FOR {
                return Some(partitions.clone());
            }
        }
        let topic = state.topic.clone();
        let read = tokio::task::spawn_blocking(move || inspector.partitions(&topic)).await;
        match read {
            Ok(Ok(partitions)) if !partitions.is_empty() => {
                let partitions: BTreeSet<i32> = partitions.into_iter().collect();
                *known = Some((Instant::now(), partitions.clone()));
                Some(partitions)
            }
            _ => known.as_ref().map(|(_, p)| p.clone()),
        }
    }
}
