//! `orderflow consume <inventory|payment|fulfilment|history|order-process|stock>`: one
//! member of that projection's or process's consumer group. Start it N times and the
//! members share the topic's partitions. A process member also runs an outbox relay (one
//! per database publishes at a time).
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use consumers::member::run_member;
use projections::registry::{GroupKind, ProcessKind, ProjectionKind};
use projections::store::{ProcessSettings, Retention, Store};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Which projection this member builds, or which process it runs (`order-process`,
    /// `stock`).
    #[arg(value_parser = clap::value_parser!(GroupKind))]
    target: GroupKind,
    #[command(flatten)]
    pipeline: crate::args::PipelineArgs,
    /// Consumer group. Without it the member joins the group of the projection's live
    /// generation and follows it when `orderflow rebuild` switches to a new one.
    #[arg(long, env = "ORDERFLOW_GROUP")]
    group: Option<String>,
    #[command(flatten)]
    member: crate::args::MemberArgs,
    #[command(flatten)]
    metrics: crate::args::MetricsArgs,
    #[command(flatten)]
    schemas: crate::args::SchemaRegistryArgs,
    /// Event ids are remembered this long for deduplication (at least the topic's
    /// retention and the checkout's key retention, 7 days).
    #[arg(long, env = "ORDERFLOW_DEDUPE_WINDOW", default_value_t = Retention::default().dedupe_window.into(),
          value_parser = crate::args::duration)]
    dedupe_window: humantime::Duration,
    /// Retried and skipped dead letters are forgotten this long after their resolution.
    #[arg(long, env = "ORDERFLOW_DEAD_LETTER_RETENTION",
          default_value_t = Retention::default().resolved_dead_letters.into(), value_parser = crate::args::duration)]
    dead_letter_retention: humantime::Duration,
    /// How often this member prunes what the retention allows (one process per database
    /// prunes at a time).
    #[arg(long, env = "ORDERFLOW_PRUNE_EVERY", default_value = "10m", value_parser = crate::args::duration)]
    prune_every: humantime::Duration,
    /// Order process: how long a confirmed order may wait for its payment before it
    /// expires and its stock is released.
    #[arg(long, env = "ORDERFLOW_PAYMENT_TIMEOUT", default_value_t = ProcessSettings::PAYMENT_TIMEOUT.into(), value_parser = crate::args::duration)]
    payment_timeout: humantime::Duration,
}

impl ConsumeArgs {
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let projection = match self.target {
            GroupKind::Projection(projection) => projection,
            GroupKind::Process(process) => return self.run_process(process, shutdown).await,
        };
        let mut config = self.member.config(projection, &self.pipeline.topic.topic)?;
        config.mirrors = self.pipeline.database.region.mirrors();
        let kafka = self.pipeline.kafka.checked_settings(Some(&self.pipeline.topic.topic)).await?;
        config.contract = self.schemas.contract().await?;
        let store = self.pipeline.database.connect().await?;
        let pruner = self.spawn_pruner(&kafka, &store, &self.pipeline.topic.topic).await;
        let metrics = self.metrics.spawn().await?;
        let mirror_ages = tokio::spawn(consumers::metrics::watch_mirror_ages(
            kafka.clone(),
            config.mirrors.clone(),
            Duration::from_secs(5),
        ));
        let follow_live = self.group.is_none();
        tokio::pin!(shutdown);
        loop {
            config.group = match &self.group {
                Some(group) => group.clone(),
                None => store.reads().live_projection(projection).await?.group,
            };
            tracing::info!(group = %config.group, %projection, mirrors = ?config.mirrors, brokers = %kafka.brokers, "Member starting.");
            let mut member = run_member(config.clone(), &kafka, store.clone())?;
            let switched = tokio::select! {
                result = member.wait() => match result {
                    Err(e) if e.instance_id_held() => { held_instance_id(&e).await; true }
                    result => { result?; false }
                },
                _ = &mut shutdown => {
                    member.request_stop();
                    member.wait().await?;
                    false
                }
                _ = live_group_changed(&store, projection, &config.group), if follow_live => {
                    tracing::info!(from = %config.group, "The projection's live generation changed. Moving to its group.");
                    member.request_stop();
                    member.wait().await?;
                    true
                }
            };
            if !switched {
                break;
            }
        }
        pruner.abort();
        mirror_ages.abort();
        drop(metrics);
        tracing::info!("Member stopped.");
        Ok(())
    }

    async fn spawn_pruner(
        &self,
        kafka: &infra::KafkaSettings,
        store: &Store,
        topic: &str,
    ) -> tokio::task::JoinHandle<()> {
        let retention = Retention {
            dedupe_window: dedupe_window(kafka, topic, *self.dedupe_window).await,
            resolved_dead_letters: *self.dead_letter_retention,
        };
        tokio::spawn(prune_every(store.clone(), retention, *self.prune_every))
    }

    /// A member of a process group, with the outbox relay beside it.
    async fn run_process(
        self,
        process: ProcessKind,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let mut config = self.member.config(process, &self.pipeline.topic.topic)?;
        config.decisions.payment_timeout = *self.payment_timeout;
        let topic = config.topic.clone();
        let kafka = self.pipeline.kafka.checked_settings(Some(&topic)).await?;
        config.contract = self.schemas.contract().await?;
        let store = self.pipeline.database.connect().await?;
        config.group = match &self.group {
            Some(group) => group.clone(),
            None => store.group(process),
        };
        let wake = Arc::new(tokio::sync::Notify::new());
        config.outbox_written = Some(wake.clone());
        let pruner = self.spawn_pruner(&kafka, &store, &topic).await;
        let metrics = self.metrics.spawn().await?;
        let mut relay = consumers::spawn_relay(store.outbox(), &kafka, wake);
        tokio::pin!(shutdown);
        let (mut member, relay_ended) = loop {
            tracing::info!(group = %config.group, %process, %topic, brokers = %kafka.brokers, "Member starting.");
            let mut member = run_member(config.clone(), &kafka, store.clone())?;
            let relay_ended = tokio::select! {
                result = member.wait() => match result {
                    Err(e) if e.instance_id_held() => { held_instance_id(&e).await; continue }
                    result => { result?; None }
                },
                _ = &mut shutdown => { member.request_stop(); member.wait().await?; None }
                result = relay.ended() => Some(result),
            };
            break (member, relay_ended);
        };
        match relay_ended {
            // The relay gave up (the broker refused it): the member stops too.
            Some(result) => {
                member.request_stop();
                member.wait().await?;
                result?;
            }
            None => relay.stop().await?,
        }
        pruner.abort();
        drop(metrics);
        tracing::info!("Member stopped.");
        Ok(())
    }
}

/// How long a member refused its instance id waits before it starts again.
const INSTANCE_ID_RETRY: Duration = Duration::from_secs(5);

/// A static member started while the broker still counts a crashed one under its name
/// (the consumer protocol refuses it until the dead one's session ends): wait, then the
/// caller starts the member again.
async fn held_instance_id(error: &consumers::ConsumerError) {
    tracing::warn!(error = error as &dyn std::error::Error, retry_in = ?INSTANCE_ID_RETRY,
        "The instance id is still held by a member the broker has not timed out yet. Starting again shortly.");
    tokio::time::sleep(INSTANCE_ID_RETRY).await;
}

/// The dedupe window actually kept: at least the topic's retention, since a rebuild or a
/// replay re-reads anything the log still holds, and a copy of an event still in the log
/// must still be recognised.
async fn dedupe_window(kafka: &infra::KafkaSettings, topic: &str, configured: Duration) -> Duration {
    match infra::topics::retention(kafka, topic, Duration::from_secs(10)).await {
        Ok(Some(retention)) if retention > configured => {
            tracing::warn!(?configured, ?retention, topic, "The dedupe window is shorter than the topic's retention. Event ids are kept as long as the topic keeps records.");
            retention
        }
        Ok(None) => {
            tracing::info!(
                ?configured,
                topic,
                "The topic keeps records for ever. Event ids older than the dedupe window are still pruned."
            );
            configured
        }
        Ok(Some(_)) => configured,
        Err(e) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                topic,
                "Cannot read the topic's retention. Using the configured dedupe window."
            );
            configured
        }
    }
}

/// Prunes what `retention` allows every `every`, for as long as the member runs.
async fn prune_every(store: Store, retention: Retention, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match store.operations().prune(retention).await {
            Ok(Some(pruned)) => {
                tracing::info!(
                    event_ids = pruned.event_ids,
                    dead_letters = pruned.dead_letters,
                    "Pruned what the retention allows."
                )
            }
            Ok(None) => tracing::debug!("Another process is pruning. Skipping this round."),
            Err(e) => tracing::warn!(
                error = &e as &dyn std::error::Error,
                "Pruning failed. It is tried again at the next round."
            ),
        }
    }
}

/// Resolves once the projection's views show another group's tables (a rebuild switched).
async fn live_group_changed(store: &Store, projection: ProjectionKind, current: &str) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        match store.reads().live_projection(projection).await {
            Ok(live) if live.group != current => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "Cannot read the live generation. Looking again shortly."
                )
            }
        }
    }
}

impl ConsumeArgs {
    /// What this member runs: a projection or a process.
    pub fn target(&self) -> GroupKind {
        self.target
    }
}
