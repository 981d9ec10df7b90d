//! S1: how long a decider's partitions stall when its member is SIGKILLed, with orders
//! arriving throughout: restarted at once under its instance id (static membership, the
//! group hands the partitions straight back), restarted at once without one (the group
//! waits out the dead member's session), and not restarted while a second member runs
//! (the survivor takes the partitions after the dead member's session). The member is
//! `orderflow consume order-process` as a child process, killed as an operator's node dies.
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use producers::publisher::{Publisher, PublisherConfig};
use projections::store::Store;
use schemas::EventKind;

use super::stats::Figure;
use super::BenchContext;
use crate::kit::TempDatabases;

/// The most a stall is waited for before the figure is given up.
const GIVE_UP: Duration = Duration::from_secs(120);

struct Members<'a> {
    ctx: &'a BenchContext,
    topic: &'a str,
    database_url: &'a str,
    group: String,
    protocol: consumers::GroupProtocol,
}

impl Members<'_> {
    fn spawn(&self, instance: Option<&str>) -> anyhow::Result<Child> {
        let session = humantime::format_duration(*self.ctx.member.session_timeout).to_string();
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["consume", "order-process", "--topic", self.topic, "--group", &self.group]).args([
            "--database-url",
            self.database_url,
            "--group-protocol",
            self.protocol.name(),
        ]);
        if self.protocol == consumers::GroupProtocol::Classic {
            // Under the consumer protocol the session timeout is the broker's.
            command.args(["--session-timeout", &session]);
        }
        command
            .env("ORDERFLOW_BROKERS", &self.ctx.kafka.brokers)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(instance) = instance {
            command.args(["--instance-id", instance]);
        }
        Ok(command.spawn()?)
    }
}

/// The group's stored offset per partition of the orders topic.
async fn positions(store: &Store, group: &str, topic: &str, partitions: &[i32]) -> anyhow::Result<BTreeMap<i32, i64>> {
    Ok(store.reads().stored_offsets(group, topic, partitions).await?.into_iter().collect())
}

/// Waits until every partition has moved past `from` (absent: has any offset); returns
/// how long that took.
async fn until_every_partition_moves(
    store: &Store,
    group: &str,
    topic: &str,
    partitions: &[i32],
    from: &BTreeMap<i32, i64>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let now = positions(store, group, topic, partitions).await?;
        let moved = partitions.iter().all(|p| match (now.get(p), from.get(p)) {
            (Some(now), Some(before)) => now > before,
            (Some(_), None) => true,
            (None, _) => false,
        });
        if moved {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < GIVE_UP, "the group did not move on every partition within {GIVE_UP:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One measurement: the stall of every partition after the first member is SIGKILLed.
async fn stall(
    members: &Members<'_>,
    store: &Store,
    partitions: &[i32],
    instance: Option<&str>,
    restart: bool,
) -> anyhow::Result<Duration> {
    // Every child spawned is killed whatever happens.
    let mut children = Vec::new();
    let result = measure(members, store, partitions, instance, restart, &mut children).await;
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

async fn measure(
    members: &Members<'_>,
    store: &Store,
    partitions: &[i32],
    instance: Option<&str>,
    restart: bool,
    children: &mut Vec<Child>,
) -> anyhow::Result<Duration> {
    children.push(members.spawn(instance)?);
    if !restart {
        children.push(members.spawn(None)?);
    }
    until_every_partition_moves(store, &members.group, members.topic, partitions, &BTreeMap::new()).await?;
    // Settled into its assignment before the kill.
    tokio::time::sleep(Duration::from_secs(2)).await;
    children[0].kill()?;
    children[0].wait()?;
    let at_kill = positions(store, &members.group, members.topic, partitions).await?;
    let killed = Instant::now();
    if restart {
        children.push(members.spawn(instance)?);
    }
    until_every_partition_moves(store, &members.group, members.topic, partitions, &at_kill).await?;
    Ok(killed.elapsed())
}

pub async fn s1_restart_stall(ctx: &BenchContext, databases: &TempDatabases) -> anyhow::Result<Vec<Figure>> {
    let topic = ctx.fresh_topic("bench-restart").await?;
    let database_url = databases.fresh_url().await?;
    let store = Store::connect(&database_url).await?;
    let partitions: Vec<i32> = (0..ctx.partitions).collect();
    let config = PublisherConfig {
        topic: topic.clone(),
        deadline: Duration::from_secs(10),
        linger_ms: 1,
        codec: schemas::Codec::builtin(),
    };
    let publisher = Arc::new(Publisher::new(&ctx.kafka, config)?);
    // Orders keep arriving, 200 a second, so every partition has records to apply.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (publisher, stop) = (publisher.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let order = uuid::Uuid::new_v4();
                let event = schemas::samples::readdressed(schemas::samples::sample(EventKind::OrderPlaced), order);
                let _ = publisher.publish(&event, "bench").await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let session = *ctx.member.session_timeout;
    let mut figures = Vec::new();
    use consumers::GroupProtocol::{Classic, Consumer};
    let cases = [
        ("S1", "decider stall, SIGKILL + restart, static", Some("bench-decider-0"), true, Some(2.0), Classic),
        ("S1b", "decider stall, SIGKILL + restart, dynamic", None, true, None, Classic),
        ("S1c", "decider stall, SIGKILL, survivor takes over", None, false, None, Classic),
        ("S1k", "… static, KIP-848 consumer protocol", Some("bench-decider-0"), true, None, Consumer),
    ];
    for (id, name, instance, restart, goal, protocol) in cases {
        let members = Members {
            ctx,
            topic: &topic,
            database_url: &database_url,
            group: format!("bench-restart-{id}-{}", uuid::Uuid::new_v4().simple()),
            protocol,
        };
        let stalled = stall(&members, &store, &partitions, instance, restart).await;
        ctx.tick();
        let stalled = match stalled {
            Ok(s) => s,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(e.context(format!("measuring {id}")));
            }
        };
        let seconds = stalled.as_secs_f64();
        figures.push(Figure {
            id,
            name: name.to_string(),
            value: seconds,
            unit: "s",
            target: goal.map(|g| format!("≤ {g}")),
            met: goal.map(|g| seconds <= g),
            detail: format!(
                "SIGKILL → every partition of the order process's group applying again, orders arriving at ~200/s \
                 on {} partitions; {}",
                ctx.partitions,
                match protocol {
                    Classic => format!("classic protocol, session timeout {}", humantime::format_duration(session)),
                    Consumer => "consumer protocol: a crashed member's instance id is released only after the \
                                 broker's group.consumer.session.timeout.ms (45 s by Kafka's default, 6 s on \
                                 infra/local's broker), and the refused member retries every 5 s"
                        .to_string(),
                }
            ),
            numerator: None,
            denominator: None,
        });
    }
    stop.store(true, Ordering::Relaxed);
    load.await?;
    Ok(figures)
}
