//! `orderflow topics create`.
use std::time::Duration;

use clap::{Args, Subcommand};
use infra::topics::{create_topics, TopicOutcome, TopicSpec};

use crate::args::KafkaArgs;

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create the orders topic and its stock topic (`<orders>-stock`, where the order
    /// process repartitions stock requests by SKU) through the Kafka admin API (existing
    /// topics are fine).
    Create(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    topic: crate::args::TopicArgs,
    /// Partition count: the ceiling on members per consumer group.
    #[arg(long, env = "ORDERFLOW_PARTITIONS", default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    partitions: i32,
    /// Replication factor (3 in production); without it, the broker's
    /// `default.replication.factor`.
    #[arg(long, env = "ORDERFLOW_REPLICATION_FACTOR", value_parser = clap::value_parser!(i32).range(1..=16))]
    replication_factor: Option<i32>,
    /// How long to wait for the broker.
    #[arg(long, default_value = "30s", value_parser = crate::args::parse_duration)]
    timeout: Duration,
}

impl TopicsCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            TopicsCommand::Create(args) => {
                let settings = args.kafka.checked_settings(None).await?;
                let specs: Vec<TopicSpec> = [args.topic.topic.clone(), schemas::stock_topic(&args.topic.topic)]
                    .into_iter()
                    .map(|name| TopicSpec {
                        name,
                        partitions: args.partitions,
                        replication_factor: args.replication_factor,
                    })
                    .collect();
                for (name, outcome) in create_topics(&settings, &specs, args.timeout).await? {
                    match outcome {
                        TopicOutcome::Created => {
                            println!("created topic {name} ({} partitions)", args.partitions)
                        }
                        TopicOutcome::AlreadyExisted => println!("topic {name} already exists"),
                    }
                }
                Ok(())
            }
        }
    }
}
