//! `orderflow serve-api`: the query API and dashboard (see `query_api`).
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::args::parse_duration;
use crate::query_api::{self, ApiState};

#[derive(Debug, Args)]
pub struct ServeApiArgs {
    #[command(flatten)]
    pipeline: crate::args::PipelineArgs,
    /// Address to serve the API and dashboard on.
    #[arg(long, env = "ORDERFLOW_API_LISTEN", default_value = "127.0.0.1:8081")]
    listen: String,
    /// How long a query with `after=` waits for the projections before answering 503.
    #[arg(long, env = "ORDERFLOW_READ_WAIT", default_value = "2s", value_parser = parse_duration)]
    read_wait: Duration,
    #[command(flatten)]
    access: crate::args::AccessArgs,
    #[command(flatten)]
    metrics: crate::args::MetricsArgs,
    /// Available stock below this is "low" on the dashboard.
    #[arg(long, env = "ORDERFLOW_LOW_STOCK", default_value_t = 10)]
    low_stock: i64,
}

/// How far behind its primary the replica the API reads is, in WAL bytes not yet applied.
pub const REPLICA_LAG_BYTES: &str = "orderflow_replica_lag_bytes";
/// Seconds since the newest transaction the replica applied committed on the primary.
pub const REPLICA_LAG_SECONDS: &str = "orderflow_replica_lag_seconds";
const REPLICA_LAG_EVERY: Duration = Duration::from_secs(5);

/// Sets the replica-lag gauges every `every` for as long as the task runs (a failed read
/// leaves the last values).
async fn watch_replica_lag(reads: projections::store::Reads, every: Duration) {
    loop {
        match reads.replica_lag().await {
            Ok(Some(lag)) => {
                metrics::gauge!(REPLICA_LAG_BYTES).set(lag.unapplied_bytes as f64);
                metrics::gauge!(REPLICA_LAG_SECONDS).set(lag.seconds_since_replayed);
            }
            Ok(None) => {
                tracing::warn!("The database is no replica any more (promoted): replica lag is no longer reported.");
                return;
            }
            Err(e) => tracing::debug!(error = &e as &dyn std::error::Error, "Cannot read the replica's lag."),
        }
        tokio::time::sleep(every).await;
    }
}

impl ServeApiArgs {
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let kafka = self.pipeline.kafka.checked_settings(Some(&self.pipeline.topic.topic)).await?;
        let store = self.pipeline.database.connect_with(projections::store::SessionLimits::READER).await?;
        let access = self.access.access().await.context("configuring authentication")?;
        let state =
            ApiState::new(store.reads(), &kafka, &self.pipeline.topic.topic, self.read_wait, self.low_stock, access)
                .in_region(self.pipeline.database.region.region.clone(), self.pipeline.database.region.mirrors());
        let listener =
            tokio::net::TcpListener::bind(&self.listen).await.with_context(|| format!("binding {}", self.listen))?;
        let _metrics = self.metrics.spawn().await?;
        if let Some(lag) = store.reads().replica_lag().await? {
            tracing::info!(
                unapplied_bytes = lag.unapplied_bytes,
                "Serving from a streaming replica; its lag is a metric."
            );
            tokio::spawn(watch_replica_lag(store.reads(), REPLICA_LAG_EVERY));
        }
        tracing::info!(listen = %listener.local_addr()?, "The query API is serving.");
        query_api::run(listener, state, shutdown).await.context("Serving the query API.")?;
        Ok(())
    }
}
