//! Every metric a consumer member emits is defined here, once.
pub const EVENTS_APPLIED: &str = "orderflow_consumer_events_applied_total";
pub const RECORDS_SEEN: &str = "orderflow_consumer_records_total";
pub const BATCH_RECORDS: &str = "orderflow_consumer_batch_records";
pub const BATCH_SECONDS: &str = "orderflow_consumer_batch_seconds";
pub const DEAD_LETTERS: &str = "orderflow_consumer_dead_letters_total";
pub const DUPLICATES: &str = "orderflow_consumer_duplicate_events_total";
pub const FENCED_RECORDS: &str = "orderflow_consumer_already_applied_records_total";
pub const LAG: &str = "orderflow_consumer_lag";
pub const REBALANCES: &str = "orderflow_consumer_rebalances_total";
pub const MAX_POLL_EXCEEDED: &str = "orderflow_consumer_max_poll_interval_exceeded_total";
pub const REWINDS: &str = "orderflow_consumer_rewinds_total";
pub const BATCH_RETRIES: &str = "orderflow_consumer_batch_retries_total";
/// Partitions refused on assignment because their stored offset lies outside the log.
pub const OFFSETS_REFUSED: &str = "orderflow_consumer_offsets_refused_total";
/// Calls to the schema registry that failed while learning a batch's schema ids.
pub const REGISTRY_FAILURES: &str = "orderflow_consumer_schema_registry_failures_total";
/// 1 while the group waits for the schema registry to learn a batch's ids, else 0.
pub const REGISTRY_STALLED: &str = "orderflow_consumer_schema_registry_stalled";
/// Records the database refused to store, parked after bisecting their batch.
pub const RECORDS_REFUSED: &str = "orderflow_consumer_records_refused_total";

pub fn batch_done(group: &str, records: usize, outcome: &projections::store::BatchOutcome, seconds: f64) {
    let g = group.to_string();
    metrics::counter!(RECORDS_SEEN, "group" => g.clone()).increment(records as u64);
    metrics::counter!(EVENTS_APPLIED, "group" => g.clone()).increment(outcome.applied as u64);
    metrics::counter!(DEAD_LETTERS, "group" => g.clone()).increment(outcome.dead_lettered as u64);
    metrics::counter!(DUPLICATES, "group" => g.clone()).increment(outcome.duplicates as u64);
    metrics::counter!(FENCED_RECORDS, "group" => g.clone()).increment(outcome.already_applied as u64);
    metrics::histogram!(BATCH_RECORDS, "group" => g.clone()).record(records as f64);
    metrics::histogram!(BATCH_SECONDS, "group" => g).record(seconds);
}

/// Labelled by projection too: a rebuild moves a projection to a new group, and
/// autoscalers and dashboards should follow the projection, not a group name.
pub fn lag(projection: &str, group: &str, topic: &str, partition: i32, lag: i64) {
    metrics::gauge!(LAG, "projection" => projection.to_string(), "group" => group.to_string(),
        "topic" => topic.to_string(), "partition" => partition.to_string())
    .set(lag as f64);
}

pub fn rebalance(group: &str, kind: &'static str) {
    metrics::counter!(REBALANCES, "group" => group.to_string(), "kind" => kind).increment(1);
}

pub fn max_poll_exceeded(group: &str) {
    metrics::counter!(MAX_POLL_EXCEEDED, "group" => group.to_string()).increment(1);
}

pub fn batch_retry(group: &str) {
    metrics::counter!(BATCH_RETRIES, "group" => group.to_string()).increment(1);
}

pub fn registry_failure(group: &str) {
    metrics::counter!(REGISTRY_FAILURES, "group" => group.to_string()).increment(1);
}

pub fn registry_stalled(group: &str, stalled: bool) {
    metrics::gauge!(REGISTRY_STALLED, "group" => group.to_string()).set(if stalled { 1.0 } else { 0.0 });
}

/// A partition's records started above the stored offset and were re-read instead.
pub fn rewind(group: &str) {
    metrics::counter!(REWINDS, "group" => group.to_string()).increment(1);
}

pub fn offsets_refused(group: &str, partition: i32) {
    metrics::counter!(OFFSETS_REFUSED, "group" => group.to_string(), "partition" => partition.to_string()).increment(1);
}

pub fn record_refused(group: &str) {
    metrics::counter!(RECORDS_REFUSED, "group" => group.to_string()).increment(1);
}

/// Decided events the relay published (at least once: a re-publication after a crash counts again).
pub const OUTBOX_PUBLISHED: &str = "orderflow_outbox_published_total";
/// Publish rounds of the relay that failed and will be retried.
pub const OUTBOX_FAILURES: &str = "orderflow_outbox_publish_failures_total";
/// Payment timers that fired (orders expired or their timers cleared).
pub const TIMERS_FIRED: &str = "orderflow_process_timers_fired_total";

pub fn outbox_published(events: usize) {
    metrics::counter!(OUTBOX_PUBLISHED).increment(events as u64);
}

pub fn outbox_failed() {
    metrics::counter!(OUTBOX_FAILURES).increment(1);
}

pub fn timers_fired(group: &str, timers: usize) {
    metrics::counter!(TIMERS_FIRED, "group" => group.to_string()).increment(timers as u64);
}

/// Seconds between now and the newest MirrorMaker 2 heartbeat copied from a region
/// (`source`): how far behind that region this region's views can at best be.
pub const MIRROR_AGE: &str = "orderflow_mirror_age_seconds";

/// Sets [`MIRROR_AGE`] for `source` every `every`, for as long as the task runs. A copy
/// with no heartbeat yet, or a broker that does not answer, leaves the last value.
pub async fn watch_mirror_ages(kafka: infra::KafkaSettings, sources: Vec<schemas::Region>, every: std::time::Duration) {
    loop {
        for source in &sources {
            let (settings, name) = (kafka.clone(), source.to_string());
            let age = tokio::task::spawn_blocking(move || {
                infra::group_inspect::Inspector::mirror_age(&settings, &name, std::time::Duration::from_secs(5))
            })
            .await;
            match age {
                Ok(Ok(Some(age))) => {
                    metrics::gauge!(MIRROR_AGE, "source" => source.to_string()).set(age.as_secs_f64());
                }
                Ok(Ok(None)) => tracing::debug!(%source, "No heartbeat copied from this region yet."),
                Ok(Err(e)) => {
                    tracing::debug!(error = &e as &dyn std::error::Error, %source, "Cannot read the mirror's heartbeats.")
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(every).await;
    }
}
