//! The command-line dispatcher: which subcommands exist and which file runs each. Shared
//! argument groups are in `args.rs`.
use clap::{Parser, Subcommand};

use crate::{checkout_cmd, topics_cmd};

#[derive(Debug, Parser)]
#[command(name = "orderflow", version, about = "Event-sourced order pipeline: checkout → Kafka log → SQL projections")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// Bring a database to this release's catalog and create the services' PostgreSQL
    /// roles and grants (run once as the owner; services then run under their own roles).
    Migrate(crate::migrate_cmd::MigrateArgs),
    /// Make service tokens for the HTTP APIs.
    Auth {
        #[command(subcommand)]
        command: crate::auth_cmd::AuthCommand,
    },
    /// Regions: hand a lost region's orders to another, fence it, list its tail.
    Region {
        #[command(subcommand)]
        command: crate::region_cmd::RegionCommand,
    },
    /// The event contract and a Confluent-compatible schema registry: register, check.
    Schemas {
        #[command(subcommand)]
        command: crate::schemas_cmd::SchemasCommand,
    },
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

    /// The name this process's spans are exported under (`service.name`): the service it
    /// runs, so a trace shows which process each step ran in.
    pub fn service_name(&self) -> String {
        match &self.command {
            Command::Checkout(_) => "orderflow-checkout".into(),
            Command::Consume(args) => format!("orderflow-{}", args.target().name()),
            Command::ServeApi(_) => "orderflow-query-api".into(),
            Command::Demo(_) => "orderflow-demo".into(),
            _ => "orderflow".into(),
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
            Command::Auth { command } => command.run(),
            Command::Schemas { command } => command.run().await,
            Command::Region { command } => command.run().await,
            Command::Migrate(args) => args.run().await,
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
    tracing::info!("Shutdown requested. Finishing the work in hand.");
}
