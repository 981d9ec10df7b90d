//! `orderflow serve-api`: the query API and dashboard (see `query_api`).
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use infra::group_inspect::Inspector;

use crate::cli::{parse_duration, KafkaArgs};
use crate::query_api::{self, ApiState, Inner};

#[derive(Debug, Args)]
pub struct ServeApiArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Address to serve the API and dashboard on.
    #[arg(long, env = "ORDERFLOW_API_LISTEN", default_value = "127.0.0.1:8081")]
    listen: String,
    #[command(flatten)]
    database: crate::cli::DatabaseArgs,
    #[arg(long, env = "ORDERFLOW_TOPIC", default_value = schemas::ORDERS_TOPIC)]
    topic: String,
    /// How long a query with `after=` waits for the projections before answering 503.
    #[arg(long, env = "ORDERFLOW_READ_WAIT", default_value = "2s", value_parser = parse_duration)]
    read_wait: Duration,
    /// Available stock below this is "low" on the dashboard.
    #[arg(long, env = "ORDERFLOW_LOW_STOCK", default_value_t = 10)]
    low_stock: i64,
}

impl ServeApiArgs {
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let kafka = self.kafka.settings()?;
        let store = self.database.connect().await?;
        // Lag needs the broker; without one the rest of the API still answers.
        let inspector = match Inspector::new(&kafka, Duration::from_secs(3)) {
            Ok(i) => Some(Arc::new(i)),
            Err(e) => {
                tracing::warn!(error = %e, "no broker client: the dashboard will show lag without log ends");
                None
            }
        };
        let state = ApiState(Arc::new(Inner {
            store,
            topic: self.topic,
            read_wait: self.read_wait,
            low_stock: self.low_stock,
            inspector,
            prometheus: infra::telemetry::prometheus(),
        }));
        let listener =
            tokio::net::TcpListener::bind(&self.listen).await.with_context(|| format!("binding {}", self.listen))?;
        tracing::info!(listen = %listener.local_addr()?, "query API serving");
        axum::serve(listener, query_api::router(state)).with_graceful_shutdown(shutdown).await?;
        Ok(())
    }
}
