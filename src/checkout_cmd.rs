//! `orderflow checkout` and `orderflow load`.
use std::time::Duration;

use crate::load::{self, LoadConfig};
use anyhow::Context;
use clap::Args;
use producers::checkout::{self, AppState};
use producers::publisher::PublisherConfig;

use crate::args::{parse_duration, AccessArgs, DatabaseUrlArgs, KafkaArgs, SchemaRegistryArgs, TopicArgs};

#[derive(Debug, Args)]
pub struct CheckoutArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Address to serve the API on.
    #[arg(long, env = "ORDERFLOW_CHECKOUT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Where Idempotency-Key records live.
    #[command(flatten)]
    database: DatabaseUrlArgs,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    metrics: crate::args::MetricsArgs,
    #[command(flatten)]
    topic: TopicArgs,
    #[command(flatten)]
    schemas: SchemaRegistryArgs,
    /// How long a request waits for the broker's acknowledgement before answering 503.
    #[arg(long, env = "ORDERFLOW_PUBLISH_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    publish_timeout: Duration,
    /// Producer batching delay: higher trades latency for throughput.
    #[arg(long, env = "ORDERFLOW_LINGER_MS", default_value_t = 2)]
    linger_ms: u32,
    #[command(flatten)]
    region: crate::args::RegionArgs,
    /// Another region's checkout, `<region>=<base URL>` (repeat, or comma-separate in the
    /// environment): requests about orders homed there are forwarded to it.
    #[arg(long = "region-checkout", env = "ORDERFLOW_REGION_CHECKOUTS", value_delimiter = ',',
          value_parser = producers::checkout::regions::parse_checkout, requires = "region")]
    region_checkouts: Vec<(schemas::Region, String)>,
    /// Which region serves a destination country, `<country>=<region>` (repeat, or
    /// comma-separate in the environment): a new order shipping there is placed in that
    /// region (its stock, its warehouses), or here if that region cannot be reached.
    #[arg(long = "country-region", env = "ORDERFLOW_COUNTRY_REGIONS", value_delimiter = ',',
          value_parser = producers::checkout::regions::parse_destination, requires = "region")]
    country_regions: Vec<(String, schemas::Region)>,
}

/// How often a regional checkout looks for new handovers in its database.
const HANDOVER_LOOK: Duration = Duration::from_secs(1);

impl CheckoutArgs {
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let kafka = self.kafka.checked_settings(Some(&self.topic.topic)).await?;
        let contract = self.schemas.contract().await?;
        let publisher = PublisherConfig {
            topic: self.topic.topic,
            deadline: self.publish_timeout,
            linger_ms: self.linger_ms,
            codec: contract.codec().clone(),
        };
        let access = self.access.access().await.context("configuring authentication")?;
        let forward_timeout = self.publish_timeout + FORWARD_MARGIN;
        let mut state = AppState::connect(&kafka, &self.database.database_url, publisher, access)
            .await
            .context("starting checkout")?;
        if let Some(here) = self.region.region {
            let checkouts = self.region_checkouts.into_iter().collect();
            tracing::info!(region = %here, others = ?checkouts, "The checkout serves one region of several.");
            let destinations = self.country_regions.into_iter().collect();
            // Who writes each region's orders: this region's database records handovers.
            let store = projections::store::Store::connect(&self.database.database_url)
                .await
                .context("connecting to the region's database for its handovers")?;
            let owners = crate::region_cmd::follow_handovers(store, HANDOVER_LOOK);
            let regions = checkout::regions::Regions::new(here, checkouts, forward_timeout)?
                .with_destinations(destinations)
                .with_owners(owners);
            state = state.in_region(regions);
        }
        let listener =
            tokio::net::TcpListener::bind(&self.listen).await.with_context(|| format!("binding {}", self.listen))?;
        let _metrics = self.metrics.spawn().await?;
        tracing::info!(listen = %listener.local_addr()?, brokers = %kafka.brokers, "The checkout is serving.");
        checkout::run(listener, state, shutdown).await.context("Serving the checkout.")?;
        tracing::info!("The checkout stopped.");
        Ok(())
    }
}

/// A forwarded request waits this much longer than a publish, so the home region's own
/// answer (202, or its 503 outcome_unknown) arrives before this checkout gives up.
const FORWARD_MARGIN: Duration = Duration::from_secs(3);

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Base URL of a running checkout.
    #[arg(long, env = "ORDERFLOW_LOAD_TARGET", default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Bearer token with orders:write, payments:write and shipments:write.
    #[arg(long, env = "ORDERFLOW_LOAD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Requests per second, all routes together.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rate: u32,
    /// How long to run, e.g. 30s or 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Orders in progress at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    workers: u32,
    /// Distinct SKUs orders draw from.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    skus: u32,
}

impl LoadArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let report = load::run(LoadConfig {
            target: self.target,
            token: self.token,
            decisions: None,
            initial_stock: 0,
            limited_edition: None,
            rate: self.rate,
            duration: self.duration,
            workers: self.workers as usize,
            skus: self.skus,
            show_progress: true,
        })
        .await;
        println!("{}", report.summary());
        if report.accepted == 0 {
            anyhow::bail!("no request was accepted: is the checkout running at the target?");
        }
        Ok(())
    }
}
