//! `orderflow offsets list|reset`: the stored offsets of a group and the partitions its
//! members refused (stored offset outside the log), and the operator's way out: move a
//! group's stored offsets to the log's start, its end, or a point in time. A reset is a
//! dry run unless `--execute` is given, is refused while the group has members (as Kafka's
//! own `kafka-consumer-groups --reset-offsets` is), and is recorded in `offset_resets`.
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use infra::group_inspect::Inspector;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum OffsetsCommand {
    /// Show a group's stored offsets next to the log's bounds, and refused partitions.
    List(ListArgs),
    /// Move a group's stored offsets (dry run without `--execute`).
    Reset(ResetArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pipeline: crate::args::PipelineArgs,
    /// The consumer group.
    #[arg(long)]
    group: String,
    /// One JSON object per partition instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_time"])))]
pub struct ResetArgs {
    #[command(flatten)]
    pipeline: crate::args::PipelineArgs,
    /// The consumer group whose stored offsets move.
    #[arg(long)]
    group: String,
    /// Only these partitions (default: every partition of the topic).
    #[arg(long = "partition")]
    partitions: Vec<i32>,
    /// To the first record the log holds.
    #[arg(long)]
    to_earliest: bool,
    /// To the end of the log: what is there now is never applied.
    #[arg(long)]
    to_latest: bool,
    /// To the first record at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    to_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Move the offsets (without it, only show what would move).
    #[arg(long)]
    execute: bool,
    /// One JSON object per partition instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    operator: crate::args::OperatorArgs,
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time like 2026-12-01T10:00:00Z: {e}"))
}

impl OffsetsCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            OffsetsCommand::List(args) => args.run().await,
            OffsetsCommand::Reset(args) => args.run().await,
        }
    }
}

/// The log's bounds per partition.
async fn bounds(
    kafka: &infra::KafkaSettings,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<(Inspector, BTreeMap<i32, (i64, i64)>)> {
    let inspector = Inspector::new(kafka, Duration::from_secs(10))?;
    let topic = topic.to_string();
    let partitions = partitions.to_vec();
    tokio::task::spawn_blocking(move || {
        let all = if partitions.is_empty() { inspector.partitions(&topic)? } else { partitions };
        anyhow::ensure!(!all.is_empty(), "topic {topic} has no partitions (does it exist?)");
        let bounds = all.iter().map(|p| Ok((*p, inspector.bounds(&topic, *p)?))).collect::<anyhow::Result<_>>()?;
        Ok((inspector, bounds))
    })
    .await
    .context("the log-bounds reader did not finish")?
}

impl ListArgs {
    async fn run(self) -> anyhow::Result<()> {
        let kafka = self.pipeline.kafka.checked_settings(Some(&self.pipeline.topic.topic)).await?;
        let store = self.pipeline.database.connect().await?;
        let topic = &self.pipeline.topic.topic;
        let (_, bounds) = bounds(&kafka, topic, &[]).await?;
        let partitions: Vec<i32> = bounds.keys().copied().collect();
        let stored: BTreeMap<i32, i64> =
            store.reads().stored_offsets(&self.group, topic, &partitions).await?.into_iter().collect();
        let faults = store.reads().offset_faults(&self.group, topic, None).await?;
        for (p, (start, end)) in &bounds {
            let fault = faults.iter().find(|f| f.partition == *p);
            let line = json!({"partition": p, "stored_offset": stored.get(p), "log_start": start, "log_end": end,
                "refused": fault.map(|f| f.reason())});
            if self.json {
                println!("{line}");
            } else {
                let stored = stored.get(p).map_or("-".to_string(), i64::to_string);
                let note = fault.map_or(String::new(), |f| format!("  REFUSED: {}", f.reason()));
                println!("partition {p:>4}  stored {stored:>12}  log {start}..{end}{note}");
            }
        }
        Ok(())
    }
}

impl ResetArgs {
    async fn run(self) -> anyhow::Result<()> {
        let kafka = self.pipeline.kafka.checked_settings(Some(&self.pipeline.topic.topic)).await?;
        let store = self.pipeline.database.connect().await?;
        let topic = self.pipeline.topic.topic.clone();
        let (inspector, bounds) = bounds(&kafka, &topic, &self.partitions).await?;
        let partitions: Vec<i32> = bounds.keys().copied().collect();
        let (to, target): (BTreeMap<i32, i64>, String) = if self.to_earliest {
            (bounds.iter().map(|(p, (start, _))| (*p, *start)).collect(), "earliest".into())
        } else if self.to_latest {
            (bounds.iter().map(|(p, (_, end))| (*p, *end)).collect(), "latest".into())
        } else {
            let at = self.to_time.context("a target is required")?;
            let lookup =
                tokio::task::spawn_blocking(move || inspector.offsets_at(&topic, &partitions, at.timestamp_millis()));
            (lookup.await.context("the offset lookup did not finish")??, format!("time {}", at.to_rfc3339()))
        };
        self.apply(&store, &kafka, &bounds, to, target).await
    }

    async fn apply(
        &self,
        store: &projections::store::Store,
        kafka: &infra::KafkaSettings,
        bounds: &BTreeMap<i32, (i64, i64)>,
        to: BTreeMap<i32, i64>,
        target: String,
    ) -> anyhow::Result<()> {
        let topic = &self.pipeline.topic.topic;
        let partitions: Vec<i32> = to.keys().copied().collect();
        let stored: BTreeMap<i32, i64> =
            store.reads().stored_offsets(&self.group, topic, &partitions).await?.into_iter().collect();
        for (p, offset) in &to {
            let (start, end) = bounds[p];
            let line = json!({"partition": p, "from": stored.get(p), "to": offset, "log_start": start, "log_end": end,
                "executed": self.execute});
            if self.json {
                println!("{line}");
            } else {
                let from = stored.get(p).map_or("-".to_string(), i64::to_string);
                println!("partition {p:>4}  {from:>12} -> {offset:<12}  (log {start}..{end})");
            }
        }
        if !self.execute {
            eprintln!("dry run: nothing moved; add --execute to move the stored offsets of group {}", self.group);
            return Ok(());
        }
        let members = crate::kit::members_at_broker(kafka, &self.group, std::slice::from_ref(topic)).await?;
        anyhow::ensure!(
            members == 0,
            "group {} has {members} member(s) at the broker: stop them first (a running member would keep its own position)",
            self.group,
        );
        let operator = self.operator.name();
        let arguments = json!({"group": self.group, "topic": topic, "target": target, "to": to});
        let reset = async { Ok(store.operations().reset_offsets(&self.group, topic, &to, &target, &operator).await?) };
        let moves = self.operator.audited(store, "offsets reset", arguments, reset, |m| json!(m)).await?;
        eprintln!("moved {} partition(s) of group {} to {target}; recorded in offset_resets", moves.len(), self.group);
        Ok(())
    }
}
