//! Command-line contract. Every flag has an `ORDERFLOW_*` environment variable; names are
//! used by scripts and docs, so they change only deliberately.
use clap::{Args, Parser, Subcommand};

use std::time::Duration;

use crate::{checkout_cmd, topics_cmd};

#[derive(Debug, Parser)]
#[command(name = "orderflow", version, about = "Event-sourced order pipeline: checkout → Kafka log → SQL projections")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the Kafka-protocol broker is. Further librdkafka settings (SASL, TLS, tuning)
/// come from `ORDERFLOW_KAFKA_<KEY>` variables, e.g. `ORDERFLOW_KAFKA_SECURITY_PROTOCOL`.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Bootstrap servers, comma separated.
    #[arg(long, env = "ORDERFLOW_BROKERS", default_value = "127.0.0.1:19092")]
    pub brokers: String,
}

impl KafkaArgs {
    pub fn settings(&self) -> anyhow::Result<infra::KafkaSettings> {
        Ok(infra::KafkaSettings::new(&self.brokers).with_env_overrides()?)
    }
}

/// The projection database, and how consumer groups are named in it.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// The projection database (`postgres://…` or `sqlite://…`).
    #[arg(long, env = "ORDERFLOW_DATABASE_URL", default_value = "sqlite://orderflow.db?mode=rwc")]
    pub database_url: String,
    /// Consumer groups are named `<prefix>-<projection>`; give each deployment sharing a
    /// Kafka cluster its own.
    #[arg(long, env = "ORDERFLOW_GROUP_PREFIX", default_value = projections::store::DEFAULT_GROUP_PREFIX)]
    pub group_prefix: String,
}

impl DatabaseArgs {
    pub async fn connect(&self) -> anyhow::Result<projections::store::Store> {
        use anyhow::Context;
        let store = projections::store::Store::connect(&self.database_url)
            .await
            .context("connecting to the projection database")?;
        Ok(store.with_group_prefix(&self.group_prefix)?)
    }
}

/// Where the log and the projections are: what every read-side command needs.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The topic the order events are on.
    #[arg(long, env = "ORDERFLOW_TOPIC", default_value = schemas::ORDERS_TOPIC)]
    pub topic: String,
}

/// Parses `250ms`, `5s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 500ms, 5s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: unknown unit {unit:?}; use ms, s or m")),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the topics orderflow writes and reads.
    Topics {
        #[command(subcommand)]
        command: topics_cmd::TopicsCommand,
    },
    /// Serve the checkout/publishing HTTP API.
    Checkout(checkout_cmd::CheckoutArgs),
    /// Measure throughput and latency ratios (see shared/design/benchmarks.md).
    Bench(crate::bench::BenchArgs),
    /// Run the whole pipeline in one process (embedded broker, SQLite, load) and summarize.
    Demo(crate::demo::DemoArgs),
    /// Inspect records the consumer groups parked.
    DeadLetters {
        #[command(subcommand)]
        command: crate::dead_letters_cmd::DeadLettersCommand,
    },
    /// Run one member of a projection's consumer group.
    Consume(crate::consume_cmd::ConsumeArgs),
    /// Drive a checkout with realistic order lifecycles and report rates and latencies.
    Load(checkout_cmd::LoadArgs),
    /// Rebuild a projection from the log beside the live one, then switch to it atomically.
    Rebuild(crate::rebuild_cmd::RebuildArgs),
    /// Serve the read-side HTTP API and the dashboard.
    ServeApi(crate::serve_api_cmd::ServeApiArgs),
    /// Show each consumer group: members, partitions, lag, dead letters.
    Groups(crate::groups_cmd::GroupsArgs),
}

impl Cli {
    /// Commands that draw their own progress keep the log quiet unless `RUST_LOG` says otherwise.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Demo(_) | Command::Bench(_) | Command::Load(_) | Command::Rebuild(_) | Command::Groups(_) => {
                "warn"
            }
            _ => "info",
        }
    }

    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Topics { command } => command.run().await,
            Command::Checkout(args) => args.run(shutdown_signal()).await,
            Command::Load(args) => args.run().await,
            Command::Bench(args) => args.run().await,
            Command::Consume(args) => args.run(shutdown_signal()).await,
            Command::Demo(args) => args.run(shutdown_signal()).await,
            Command::DeadLetters { command } => command.run().await,
            Command::Rebuild(args) => args.run(shutdown_signal()).await,
            Command::ServeApi(args) => args.run(shutdown_signal()).await,
            Command::Groups(args) => args.run().await,
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_reject_garbage() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
    }
}
