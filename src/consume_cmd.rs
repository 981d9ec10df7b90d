//! `orderflow consume <inventory|payment|fulfilment>`: one member of that projection's
//! consumer group. Start it N times and the members share the topic's partitions.
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use consumers::member::{run_member, MemberConfig};
use consumers::ProjectionKind;
use projections::store::Store;

use crate::cli::parse_duration;

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Which projection this member builds.
    #[arg(value_parser = clap::value_parser!(ProjectionKind))]
    projection: ProjectionKind,
    #[command(flatten)]
    pipeline: crate::cli::PipelineArgs,
    /// Consumer group. Without it the member joins the group of the projection's live
    /// generation and follows it when `orderflow rebuild` switches to a new one.
    #[arg(long, env = "ORDERFLOW_GROUP")]
    group: Option<String>,
    /// Records per batch at most.
    #[arg(long, env = "ORDERFLOW_BATCH_MAX", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_max: u32,
    /// How long a batch may wait to fill.
    #[arg(long, env = "ORDERFLOW_BATCH_WAIT", default_value = "5ms", value_parser = parse_duration)]
    batch_wait: Duration,
    /// Consumer group protocol: `classic`, or `consumer` (KIP-848, Kafka 4: the broker
    /// assigns partitions and owns the session timeout, so `--assignment-strategy` and
    /// `--session-timeout` do not apply).
    #[arg(long, env = "ORDERFLOW_GROUP_PROTOCOL", default_value = "classic")]
    group_protocol: consumers::GroupProtocol,
    /// range, roundrobin or cooperative-sticky (classic protocol).
    #[arg(long, env = "ORDERFLOW_ASSIGNMENT_STRATEGY", default_value = "cooperative-sticky",
          value_parser = ["range", "roundrobin", "cooperative-sticky"])]
    assignment_strategy: String,
    #[arg(long, env = "ORDERFLOW_SESSION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    session_timeout: Duration,
    #[arg(long, env = "ORDERFLOW_MAX_POLL_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    max_poll_interval: Duration,
    /// How long the broker may hold an empty fetch (librdkafka `fetch.wait.max.ms`). Kafka
    /// answers as soon as data arrives, so this bounds only idle fetches.
    #[arg(long, env = "ORDERFLOW_FETCH_WAIT", default_value = "10ms", value_parser = parse_duration)]
    fetch_wait: Duration,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, env = "ORDERFLOW_METRICS_LISTEN")]
    metrics_listen: Option<String>,
}

impl ConsumeArgs {
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        if self.session_timeout > self.max_poll_interval {
            anyhow::bail!("--session-timeout must not exceed --max-poll-interval");
        }
        let kafka = self.pipeline.kafka.settings()?;
        let store = self.pipeline.database.connect().await?;
        let mut config = MemberConfig::new(self.projection, &self.pipeline.topic);
        config.batch_max = self.batch_max as usize;
        config.batch_wait = self.batch_wait;
        config.group_protocol = self.group_protocol;
        config.assignment_strategy = self.assignment_strategy;
        config.session_timeout = self.session_timeout;
        config.max_poll_interval = self.max_poll_interval;
        config.fetch_wait = self.fetch_wait;
        let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(addr) = &self.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
            tracing::info!(listen = %listener.local_addr()?, "metrics on /metrics");
            tokio::spawn(infra::telemetry::serve_metrics(listener, async {
                let _ = metrics_stopped.await;
            }));
        }
        let follow_live = self.group.is_none();
        tokio::pin!(shutdown);
        loop {
            config.group = match &self.group {
                Some(group) => group.clone(),
                None => store.live_projection(self.projection.name()).await?.group,
            };
            tracing::info!(group = %config.group, projection = %self.projection, brokers = %kafka.brokers, "member starting");
            let mut member = run_member(config.clone(), &kafka, store.clone())?;
            let switched = tokio::select! {
                result = member.wait() => { result?; false }
                _ = &mut shutdown => {
                    member.request_stop();
                    member.wait().await?;
                    false
                }
                _ = live_group_changed(&store, self.projection, &config.group), if follow_live => {
                    tracing::info!(from = %config.group, "the projection's live generation changed; moving to its group");
                    member.request_stop();
                    member.wait().await?;
                    true
                }
            };
            if !switched {
                break;
            }
        }
        let _ = metrics_stop.send(());
        tracing::info!("member stopped");
        Ok(())
    }
}

/// Resolves once the projection's views show another group's tables (a rebuild switched).
async fn live_group_changed(store: &Store, projection: ProjectionKind, current: &str) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        match store.live_projection(projection.name()).await {
            Ok(live) if live.group != current => return,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the live generation; will look again"),
        }
    }
}
