//! `orderflow groups`: for each consumer group with stored offsets (on the orders topic and
//! on its stock topic, where the stock group reads), its members and their
//! partitions as the broker's group coordinator describes them, stored offset vs log end per
//! partition, dead letters and when it last applied a batch. The offsets are the database's
//! (the source of truth); Kafka's tooling shows the same ones, committed after each batch.
//! In a region (`--region`, `--mirror-regions`), also the groups on the other regions'
//! copies (`<group>@<region>` on `<region>.<topic>`) and how far behind each copy is.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clap::Args;
use infra::group_inspect::Inspector;
use serde_json::json;

#[derive(Debug, Args)]
pub struct GroupsArgs {
    #[command(flatten)]
    pipeline: crate::args::PipelineArgs,
    /// One JSON object per group, one per line.
    #[arg(long)]
    json: bool,
}

impl GroupsArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let kafka = self.pipeline.kafka.checked_settings(Some(&self.pipeline.topic.topic)).await?;
        let store = self.pipeline.database.connect().await?;
        let live = store.reads().live_projections().await?;
        let dead: BTreeMap<String, i64> = store.reads().dead_letter_counts().await?.into_iter().collect();
        let mut out = Vec::new();
        let mirrors = self.pipeline.database.region.mirrors();
        let own = schemas::pipeline_topics(&self.pipeline.topic.topic);
        let copies = mirrors.iter().flat_map(|region| own.iter().map(|t| region.mirrored(t)));
        let topics: Vec<String> = own.iter().cloned().chain(copies).collect();
        for topic in topics {
            let offsets = store.reads().all_group_offsets(&topic).await?;
            let mut groups: BTreeSet<String> = offsets.iter().map(|o| o.group.clone()).collect();
            if topic == self.pipeline.topic.topic {
                groups.extend(live.iter().map(|l| l.group.clone()));
            } else if groups.is_empty() {
                continue; // no stock group here (yet): nothing to describe
            }
            let context = TopicGroups { kafka: &kafka, topic: &topic, offsets: &offsets, live: &live, dead: &dead };
            out.extend(context.describe(groups).await?);
        }
        for region in mirrors {
            out.push(mirror_age(&kafka, &region).await);
        }
        self.print(&out);
        Ok(())
    }
}

/// `{"mirror": <region>, "age_ms": …}`: how far behind `region` this cluster's copy is
/// (null when unknown: no heartbeat copied yet, or the broker did not answer).
async fn mirror_age(kafka: &infra::KafkaSettings, region: &schemas::Region) -> serde_json::Value {
    let (kafka, source) = (kafka.clone(), region.to_string());
    let age = tokio::task::spawn_blocking(move || Inspector::mirror_age(&kafka, &source, Duration::from_secs(5))).await;
    let age_ms = match age {
        Ok(Ok(age)) => age.map(|a| a.as_millis() as u64),
        Ok(Err(e)) => {
            tracing::warn!(error = &e as &dyn std::error::Error, %region, "Cannot read the mirror's heartbeats.");
            None
        }
        Err(_) => None,
    };
    json!({"mirror": region.as_str(), "age_ms": age_ms})
}

/// What describing the groups of one topic needs.
struct TopicGroups<'a> {
    kafka: &'a infra::KafkaSettings,
    topic: &'a str,
    offsets: &'a [projections::store::GroupPartitionOffset],
    live: &'a [projections::store::LiveProjection],
    dead: &'a BTreeMap<String, i64>,
}

impl TopicGroups<'_> {
    async fn describe(&self, groups: BTreeSet<String>) -> anyhow::Result<Vec<serde_json::Value>> {
        let TopicGroups { kafka, offsets, live, dead, .. } = *self;
        let inspector = Inspector::new(kafka, Duration::from_secs(5))?;
        let topic = self.topic.to_string();
        let names: Vec<String> = groups.iter().cloned().collect();
        let (ends, members) = tokio::task::spawn_blocking(move || {
            let ends = inspector.log_ends(&topic);
            let members: Vec<_> = names.iter().map(|g| (g.clone(), inspector.members(g, &topic))).collect();
            (ends, members)
        })
        .await?;
        // Without the broker the stored side is still worth showing; lag is then unknown.
        let ends: std::collections::BTreeMap<i32, Option<i64>> = match ends {
            Ok(ends) => ends.into_iter().map(|(p, e)| (p, Some(e))).collect(),
            Err(e) => {
                eprintln!("warning: cannot read log end offsets ({e}); lag is unknown");
                offsets.iter().map(|o| (o.partition, None)).collect()
            }
        };
        let mut out = Vec::new();
        for (group, members) in members {
            let members = members.unwrap_or_else(|e| {
                tracing::warn!(error = &e as &dyn std::error::Error, %group, "Cannot describe the group at the broker. Its members are shown as unknown.");
                Vec::new()
            });
            let mine: Vec<_> = offsets.iter().filter(|o| o.group == group).collect();
            let last_applied_ms = mine.iter().map(|o| o.updated_at_ms).max();
            let partitions: Vec<_> = ends
                .iter()
                .map(|(p, end)| {
                    let next = mine.iter().find(|o| o.partition == *p).map_or(0, |o| o.next_offset);
                    json!({"partition": p, "next_offset": next, "log_end": end, "lag": end.map(|e| (e - next).max(0))})
                })
                .collect();
            let lags: Vec<Option<i64>> = partitions.iter().map(|p| p["lag"].as_i64()).collect();
            let lag: Option<i64> = lags.iter().copied().sum();
            let serving = live
                .iter()
                .find(|l| l.group == group)
                .map(|l| json!({"projection": l.projection, "generation": l.generation}));
            out.push(json!({
                "group": group,
                "topic": self.topic,
                "live_for": serving,
                "members": members.iter().map(|m| json!({"member_id": m.member_id,
                    "client_id": m.client_id, "host": m.host, "partitions": m.partitions})).collect::<Vec<_>>(),
                "partitions": partitions,
                "lag": lag,
                "dead_letters": dead.get(&group).copied().unwrap_or(0),
                "last_applied": last_applied_ms.map(|ms| projections::store::rfc3339(ms.saturating_mul(1000))),
            }));
        }
        Ok(out)
    }
}

impl GroupsArgs {
    fn print(&self, out: &[serde_json::Value]) {
        if self.json {
            for g in out {
                println!("{g}");
            }
            return;
        }
        for g in out {
            if let Some(region) = g["mirror"].as_str() {
                match g["age_ms"].as_u64() {
                    Some(ms) => println!("copy of region {region}: {ms} ms behind (MirrorMaker 2's newest heartbeat)"),
                    None => println!("copy of region {region}: age unknown (no heartbeat copied yet)"),
                }
                continue;
            }
            let live_for = g["live_for"]["projection"]
                .as_str()
                .map_or(String::new(), |p| format!(" (serves {p}, generation {})", g["live_for"]["generation"]));
            println!(
                "{} on {}{live_for}: lag {}, {} dead letter(s), last applied {}",
                g["group"].as_str().unwrap_or_default(),
                g["topic"].as_str().unwrap_or_default(),
                g["lag"],
                g["dead_letters"],
                g["last_applied"].as_str().unwrap_or("never")
            );
            let members = g["members"].as_array().cloned().unwrap_or_default();
            if members.is_empty() {
                // The classic DescribeGroups answer the client library offers shows no
                // members for groups on the consumer protocol (KIP-848).
                println!("  no members at the broker (members on --group-protocol consumer are listed by kafka-consumer-groups --describe --members)");
            }
            for m in &members {
                println!(
                    "  member {} @ {}  partitions {}",
                    m["client_id"].as_str().unwrap_or_default(),
                    m["host"].as_str().unwrap_or_default(),
                    m["partitions"]
                );
            }
            println!("  {:>9} {:>12} {:>12} {:>8}", "partition", "applied", "log end", "lag");
            for p in g["partitions"].as_array().cloned().unwrap_or_default() {
                println!("  {:>9} {:>12} {:>12} {:>8}", p["partition"], p["next_offset"], p["log_end"], p["lag"]);
            }
        }
    }
}
