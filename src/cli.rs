//! Command-line contract. Every flag has an `ORDERFLOW_*` environment variable; names are
//! used by scripts and docs, so they change only deliberately.
use clap::{Args, Parser, Subcommand};

use crate::topics_cmd;

#[derive(Debug, Parser)]
#[command(
    name = "orderflow",
    version,
    about = "Event-sourced order pipeline: checkout → Kafka log → SQL projections"
)]
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the topics orderflow writes and reads.
    Topics {
        #[command(subcommand)]
        command: topics_cmd::TopicsCommand,
    },
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Topics { command } => command.run().await,
        }
    }
}
