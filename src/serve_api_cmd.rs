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
        tracing::info!(listen = %listener.local_addr()?, "The query API is serving.");
        query_api::run(listener, state, shutdown).await.context("Serving the query API.")?;
        Ok(())
    }
}
