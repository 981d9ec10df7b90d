//! `orderflow topics create` and `orderflow topics copy-decisions`.
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use infra::topics::{create_topics, TopicOutcome, TopicSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::args::KafkaArgs;

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create the pipeline's topics through the Kafka admin API (existing topics are fine):
    /// the orders topic, `<orders>-adjustments`, `stock-requests-<orders>` and
    /// `decisions-<orders>`, all with one partition count.
    Create(CreateArgs),
    /// Upgrading from a release that appended the processes' decisions to the orders topic:
    /// copies every decision found there (up to its end now) to the decisions topic with its
    /// key, bytes and headers, so every reader finds it where it now trusts decisions (its
    /// event id is unchanged: a group that applied it before drops the copy). Run once, with
    /// the order process and the stock group stopped, under a process principal.
    CopyDecisions(CopyArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    topic: crate::args::TopicArgs,
    /// Partition count: the ceiling on members per consumer group. An orders topic that
    /// exists already keeps its count, and the topics created beside it take that count.
    #[arg(long, env = "ORDERFLOW_PARTITIONS", default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    partitions: i32,
    /// Replication factor (3 in production); without it, the broker's
    /// `default.replication.factor`.
    #[arg(long, env = "ORDERFLOW_REPLICATION_FACTOR", value_parser = clap::value_parser!(i32).range(1..=16))]
    replication_factor: Option<i32>,
    /// How long the topics keep records: `forever` (the default, and what rebuilding
    /// projections, processes and checkout keys from the log needs: the log is the
    /// backup), or a duration, past which nothing older can be rebuilt. Topics that exist
    /// already are changed to it.
    #[arg(long, env = "ORDERFLOW_RETENTION", default_value = "forever", value_parser = parse_retention)]
    retention: Retention,
    /// How long to wait for the broker.
    #[arg(long, default_value = "30s", value_parser = crate::args::parse_duration)]
    timeout: Duration,
}

/// How long the pipeline's topics keep their records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Forever,
    For(Duration),
}

impl Retention {
    fn configs(self) -> Vec<(String, String)> {
        match self {
            Retention::Forever => infra::topics::keep_everything(),
            Retention::For(d) => {
                vec![("retention.ms".into(), d.as_millis().to_string()), ("cleanup.policy".into(), "delete".into())]
            }
        }
    }

    fn as_broker_reports(self) -> Option<Duration> {
        match self {
            Retention::Forever => None,
            Retention::For(d) => Some(d),
        }
    }
}

fn parse_retention(raw: &str) -> Result<Retention, String> {
    if raw == "forever" {
        return Ok(Retention::Forever);
    }
    match crate::args::parse_duration(raw) {
        Ok(d) if d.as_millis() > 0 => Ok(Retention::For(d)),
        Ok(_) => Err("a retention of zero keeps nothing; give `forever` or a duration".into()),
        Err(e) => Err(format!("{e} (or `forever`)")),
    }
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    topic: crate::args::TopicArgs,
    #[command(flatten)]
    schemas: crate::args::SchemaRegistryArgs,
    /// How long the orders topic may stay silent before its end is reached.
    #[arg(long, default_value = "30s", value_parser = crate::args::parse_duration)]
    timeout: Duration,
}

impl TopicsCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            TopicsCommand::Create(args) => create(args).await,
            TopicsCommand::CopyDecisions(args) => copy_decisions(args).await,
        }
    }
}

/// The partition count of every topic of the pipeline that exists (none: an empty map).
async fn partition_counts(kafka: &infra::KafkaSettings, names: &[String]) -> anyhow::Result<BTreeMap<String, usize>> {
    let (kafka, names) = (kafka.clone(), names.to_vec());
    tokio::task::spawn_blocking(move || -> anyhow::Result<BTreeMap<String, usize>> {
        let inspector = infra::group_inspect::Inspector::new(&kafka, Duration::from_secs(10))?;
        let mut counts = BTreeMap::new();
        for name in names {
            let partitions = inspector.partitions(&name)?;
            if !partitions.is_empty() {
                counts.insert(name, partitions.len());
            }
        }
        Ok(counts)
    })
    .await
    .context("the metadata reader did not finish")?
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let settings = args.kafka.checked_settings(None).await?;
    let names = schemas::pipeline_topics(&args.topic.topic);
    // One partition count for all: an order's facts and decisions (a SKU's requests and
    // adjustments) must share a partition number. An existing orders topic sets it.
    let existing = partition_counts(&settings, &names).await?;
    let partitions = existing.get(&args.topic.topic).map_or(args.partitions, |n| *n as i32);
    let specs: Vec<TopicSpec> = names
        .iter()
        .map(|name| TopicSpec {
            name: name.clone(),
            partitions,
            replication_factor: args.replication_factor,
            configs: args.retention.configs(),
        })
        .collect();
    for (name, outcome) in create_topics(&settings, &specs, args.timeout).await? {
        match outcome {
            TopicOutcome::Created => println!("created topic {name} ({partitions} partitions)"),
            TopicOutcome::AlreadyExisted => {
                println!("topic {name} already exists");
                let kept = infra::topics::retention(&settings, &name, args.timeout).await?;
                if kept != args.retention.as_broker_reports() {
                    infra::topics::set_configs(&settings, &name, &args.retention.configs(), args.timeout).await?;
                    println!("  its retention was {}; now {}", shown(kept), shown(args.retention.as_broker_reports()));
                }
            }
        }
    }
    if args.retention != Retention::Forever {
        eprintln!(
            "warning: records older than {} are deleted; nothing older can be rebuilt from the log",
            shown(args.retention.as_broker_reports())
        );
    }
    let counts = partition_counts(&settings, &names).await?;
    let differing: Vec<String> =
        counts.iter().filter(|(_, n)| **n != partitions as usize).map(|(t, n)| format!("{t} has {n}")).collect();
    anyhow::ensure!(
        differing.is_empty(),
        "the pipeline's topics must have one partition count ({partitions}, the orders topic's), but {}: add \
         partitions to the smaller ones (kafka-topics --alter --partitions {partitions})",
        differing.join(", ")
    );
    Ok(())
}

fn shown(retention: Option<Duration>) -> String {
    retention.map_or_else(|| "forever".to_string(), |d| humantime::format_duration(d).to_string())
}

async fn copy_decisions(args: CopyArgs) -> anyhow::Result<()> {
    let from = args.topic.topic.clone();
    let to = schemas::decisions_topic(&from);
    let kafka = args.kafka.checked_settings(Some(&from)).await?;
    let contract = args.schemas.contract().await?;
    let ends = crate::kit::log_ends(&kafka, &from).await?;
    let mut remaining: BTreeMap<i32, i64> = ends.into_iter().filter(|(_, end)| *end > 0).collect();
    let consumer: BaseConsumer = kafka
        .client_config_with(&[
            ("group.id", "orderflow-copy-decisions"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
        ])
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in remaining.keys() {
        assignment.add_partition_offset(&from, *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let producer: FutureProducer =
        kafka.idempotent_producer(Duration::from_secs(60), Duration::from_millis(5)).create()?;
    let (mut read, mut copied) = (0u64, 0u64);
    let mut pending = Vec::new();
    let mut silent_since = std::time::Instant::now();
    while !remaining.is_empty() {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            anyhow::ensure!(
                silent_since.elapsed() < args.timeout,
                "the orders topic sent nothing for {:?} before its end (partitions left: {remaining:?})",
                args.timeout
            );
            continue;
        };
        silent_since = std::time::Instant::now();
        let message = message.context("reading the orders topic")?;
        read += 1;
        if remaining.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
            remaining.remove(&message.partition());
        }
        let Some(payload) = message.payload() else { continue };
        contract.resolve([payload]).await.context("learning a record's schema from the registry")?;
        // Bytes no schema reads are no decision: the readers park them where they are.
        let Ok(kind) = contract.codec().peek_kind(payload) else { continue };
        if !kind.is_decision() {
            continue;
        }
        let mut record = FutureRecord::to(&to).payload(payload).key(message.key().unwrap_or_default());
        if let Some(headers) = message.headers() {
            record = record.headers(headers.detach());
        }
        pending.push(producer.send_result(record).map_err(|(e, _)| e).context("queueing a copy")?);
        copied += 1;
        if pending.len() >= 10_000 {
            settle(&mut pending).await?;
        }
    }
    settle(&mut pending).await?;
    println!("copied {copied} decisions of {read} records from {from} to {to}");
    Ok(())
}

/// Waits until every queued copy is acknowledged.
async fn settle(pending: &mut Vec<rdkafka::producer::DeliveryFuture>) -> anyhow::Result<()> {
    for delivery in pending.drain(..) {
        delivery.await.context("the producer went away")?.map_err(|(e, _)| e).context("copying a decision")?;
    }
    Ok(())
}
