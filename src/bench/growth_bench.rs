//! G1: how cost grows with work. The payment projection drains logs of several sizes on
//! 12 partitions (the bench's `--partitions`) with 1, 2 and 4 members of one group, each
//! member its own `orderflow consume` process; per run, events/s (from the group's first
//! committed batch to the log's end) and the peak RSS of each member. Nothing a member
//! holds may grow with the log: its memory is bounded by its batch and fetch buffers.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::Codec;

use super::projector_bench::lifecycle_events;
use super::stats::Figure;
use super::BenchContext;
use crate::kit::{self, TempDatabases};

/// Member counts each log size is drained with.
const MEMBERS: [usize; 3] = [1, 2, 4];

/// Appends `n` lifecycle events to `topic` a slice at a time (the bench holds none of the
/// log in memory); returns each partition's end.
async fn append(ctx: &BenchContext, topic: &str, n: usize) -> anyhow::Result<BTreeMap<i32, i64>> {
    let producer: FutureProducer =
        ctx.kafka.idempotent_producer(Duration::from_secs(60), Duration::from_millis(10)).create()?;
    let codec = Codec::builtin();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut left = n;
    while left > 0 {
        let slice = left.min(100_000);
        let encoded: Vec<(String, Vec<u8>)> = lifecycle_events(slice)
            .iter()
            .map(|e| Ok((e.key(), codec.encode(e)?)))
            .collect::<Result<_, schemas::EncodeError>>()?;
        let delivered: Vec<_> = stream::iter(&encoded)
            .map(|(k, v)| producer.send(FutureRecord::to(topic).key(k).payload(v), Duration::from_secs(60)))
            .buffer_unordered(5_000)
            .collect()
            .await;
        for d in delivered {
            let d = d.map_err(|(e, _)| anyhow::anyhow!("growth backlog produce: {e}"))?;
            let end = ends.entry(d.partition).or_insert(0);
            *end = (*end).max(d.offset + 1);
        }
        left -= slice;
    }
    Ok(ends)
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kib / 1024.0)
}

/// One drain: `members` processes of one new group on `topic`, into a fresh database.
/// Returns (events/s, peak RSS of each member in MiB).
async fn drain(
    ctx: &BenchContext,
    databases: &TempDatabases,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    members: usize,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let database_url = databases.fresh_url().await?;
    let store = projections::store::Store::connect(&database_url).await?;
    let group = format!("bench-growth-{}", uuid::Uuid::new_v4().simple());
    let mut children = Vec::new();
    for _ in 0..members {
        children.push(
            std::process::Command::new(std::env::current_exe()?)
                .args(["consume", "payment", "--topic", topic, "--group", &group, "--brokers", &ctx.kafka.brokers])
                .env("ORDERFLOW_DATABASE_URL", &database_url)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .spawn()?,
        );
    }
    let total: i64 = ends.values().sum();
    let partitions: Vec<i32> = ends.keys().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(1_800);
    let mut peaks = vec![0.0f64; members];
    let mut first: Option<(Instant, i64)> = None;
    let result = loop {
        for (peak, child) in peaks.iter_mut().zip(&children) {
            *peak = peak.max(peak_rss_mib(child.id()).unwrap_or(0.0));
        }
        let stored: BTreeMap<i32, i64> =
            store.reads().stored_offsets(&group, topic, &partitions).await?.into_iter().collect();
        if first.is_none() && !stored.is_empty() {
            first = Some((Instant::now(), stored.values().sum()));
        }
        if kit::reached(&stored, ends) {
            let (t0, done_at_t0) = first.unwrap_or((Instant::now(), 0));
            break Ok(((total - done_at_t0).max(1) as f64 / t0.elapsed().as_secs_f64().max(1e-6), peaks.clone()));
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!("{members} members did not drain {total} events"));
        }
        let mut exited = false;
        for child in &mut children {
            exited |= child.try_wait()?.is_some();
        }
        if exited {
            break Err(anyhow::anyhow!("a member process exited before the log was drained"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for child in &mut children {
        let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    }
    for child in &mut children {
        let _ = child.wait();
    }
    result
}

/// G1 over `sizes`: a figure per size and member count (events/s; the detail names each
/// member's peak RSS), and a table printed as it goes.
pub async fn g1_growth(ctx: &BenchContext, databases: &TempDatabases, sizes: &[usize]) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for &size in sizes {
        let topic = ctx.fresh_topic("bench-growth").await?;
        let ends = append(ctx, &topic, size).await?;
        for members in MEMBERS {
            let (rate, peaks) = drain(ctx, databases, &topic, &ends, members).await?;
            let peak = peaks.iter().copied().fold(0.0, f64::max);
            let each: Vec<String> = peaks.iter().map(|p| format!("{p:.0}")).collect();
            figures.push(Figure {
                id: "G1",
                name: format!("{size} events, {members} member(s)"),
                value: rate,
                unit: "ev/s",
                target: None,
                met: None,
                detail: format!(
                    "payment projection, {} partitions, one process per member: {rate:.0} events/s; peak RSS per member {} MiB (largest {peak:.0})",
                    ctx.partitions,
                    each.join(", ")
                ),
                numerator: None,
                denominator: None,
            });
            ctx.tick();
        }
    }
    Ok(figures)
}
