//! Command-line contract. Every flag has an `ORDERFLOW_*` environment variable; names are
//! used by scripts and docs, so they change only deliberately.
use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};

use std::time::Duration;

use consumers::member::{defaults, MemberConfig};

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

/// The SQL database a command works on.
#[derive(Debug, Clone, Args)]
pub struct DatabaseUrlArgs {
    /// `postgres://…` or `sqlite://…` (the default: a file in the working directory).
    #[arg(long, env = "ORDERFLOW_DATABASE_URL", default_value = "sqlite://orderflow.db?mode=rwc")]
    pub database_url: String,
}

/// The projection database, and how consumer groups are named in it.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    #[command(flatten)]
    pub url: DatabaseUrlArgs,
    /// Consumer groups are named `<prefix>-<projection>`; give each deployment sharing a
    /// Kafka cluster its own.
    #[arg(long, env = "ORDERFLOW_GROUP_PREFIX", default_value = projections::store::DEFAULT_GROUP_PREFIX)]
    pub group_prefix: String,
}

impl DatabaseArgs {
    /// Connects as a writer (members, rebuilds, operator commands).
    pub async fn connect(&self) -> anyhow::Result<projections::store::Store> {
        self.connect_with(projections::store::SessionLimits::WRITER).await
    }

    pub async fn connect_with(
        &self,
        limits: projections::store::SessionLimits,
    ) -> anyhow::Result<projections::store::Store> {
        use anyhow::Context;
        let store = projections::store::Store::connect_with(&self.url.database_url, limits)
            .await
            .context("connecting to the projection database")?;
        Ok(store.with_group_prefix(&self.group_prefix)?)
    }
}

/// The topic the order events are on.
#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    #[arg(long, env = "ORDERFLOW_TOPIC", default_value = schemas::ORDERS_TOPIC)]
    pub topic: String,
}

/// Where the log and the projections are: what every read-side command needs.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub topic: TopicArgs,
}

/// How a consumer group member batches, polls and joins its group. Defaults are
/// `consumers::member::defaults`.
#[derive(Debug, Clone, Args)]
pub struct MemberArgs {
    /// Records per batch at most.
    #[arg(long, env = "ORDERFLOW_BATCH_MAX", default_value_t = defaults::BATCH_MAX,
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub batch_max: usize,
    /// How long a batch may wait to fill.
    #[arg(long, env = "ORDERFLOW_BATCH_WAIT", default_value_t = defaults::BATCH_WAIT.into(), value_parser = duration)]
    pub batch_wait: humantime::Duration,
    /// Consumer group protocol: `classic`, or `consumer` (KIP-848, Kafka 4: the broker
    /// assigns partitions and owns the session timeout, so `--assignment-strategy` and
    /// `--session-timeout` do not apply).
    #[arg(long, env = "ORDERFLOW_GROUP_PROTOCOL", default_value_t = consumers::GroupProtocol::default())]
    pub group_protocol: consumers::GroupProtocol,
    /// range, roundrobin or cooperative-sticky (classic protocol).
    #[arg(long, env = "ORDERFLOW_ASSIGNMENT_STRATEGY", default_value = defaults::ASSIGNMENT_STRATEGY,
          value_parser = clap::builder::PossibleValuesParser::new(defaults::ASSIGNMENT_STRATEGIES))]
    pub assignment_strategy: String,
    #[arg(long, env = "ORDERFLOW_SESSION_TIMEOUT", default_value_t = defaults::SESSION_TIMEOUT.into(), value_parser = duration)]
    pub session_timeout: humantime::Duration,
    #[arg(long, env = "ORDERFLOW_MAX_POLL_INTERVAL", default_value_t = defaults::MAX_POLL_INTERVAL.into(), value_parser = duration)]
    pub max_poll_interval: humantime::Duration,
    /// How long the broker may hold an empty fetch (librdkafka `fetch.wait.max.ms`). Kafka
    /// answers as soon as data arrives, so this bounds only idle fetches.
    #[arg(long, env = "ORDERFLOW_FETCH_WAIT", default_value_t = defaults::FETCH_WAIT.into(), value_parser = duration)]
    pub fetch_wait: humantime::Duration,
}

impl MemberArgs {
    /// A member configuration for `projection` on `topic` with these settings.
    pub fn config(&self, projection: projections::ProjectionKind, topic: &str) -> anyhow::Result<MemberConfig> {
        if *self.session_timeout > *self.max_poll_interval {
            anyhow::bail!("--session-timeout must not exceed --max-poll-interval");
        }
        let mut config = MemberConfig::new(projection, topic);
        config.batch_max = self.batch_max;
        config.batch_wait = *self.batch_wait;
        config.group_protocol = self.group_protocol;
        config.assignment_strategy = self.assignment_strategy.clone();
        config.session_timeout = *self.session_timeout;
        config.max_poll_interval = *self.max_poll_interval;
        config.fetch_wait = *self.fetch_wait;
        Ok(config)
    }
}

/// Parses a duration like `250ms`, `5s`, `2m`, `1h 30m` (humantime's syntax), or a bare
/// number of seconds.
pub fn duration(s: &str) -> Result<humantime::Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().map(|n| Duration::from_secs(n).into()).map_err(|e| format!("{s:?}: {e}"));
    }
    s.parse::<humantime::Duration>().map_err(|e| format!("{s:?} is not a duration like 500ms, 5s or 2m: {e}"))
}

/// [`duration`] as a `std::time::Duration`, for flags that store one.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    duration(s).map(Into::into)
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
    /// Measure throughput and latency ratios, each of two things measured in one run.
    Bench(crate::bench::BenchArgs),
    /// Run the whole pipeline in one process (embedded broker, SQLite, load) and summarize.
    Demo(crate::demo::DemoArgs),
    /// A group's stored offsets against the log; reset them (to the start, the end, a time).
    Offsets {
        #[command(subcommand)]
        command: crate::offsets_cmd::OffsetsCommand,
    },
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
            Command::Offsets { command } => command.run().await,
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
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
    }
}
