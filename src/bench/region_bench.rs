//! R1: how soon an order accepted in one region shows in another's views: the checkout in
//! eu answers 202, MirrorMaker 2 copies the record into us, us's mirror group applies it.
//! Needs two regions (`infra/local/up --regions eu,us` exports where they are).
use std::collections::HashMap;
use std::time::{Duration, Instant};

use consumers::member::run_member;
use producers::checkout::{self, AppState};
use producers::publisher::PublisherConfig;
use projections::ProjectionKind;

use super::pipeline_bench::OpenLoop;
use super::stats::{at_most, percentile, Figure};
use super::BenchContext;
use crate::kit::TempDatabases;

/// The region orders are placed in and the region they are read in, with their brokers.
pub struct RegionPair {
    pub from: (schemas::Region, infra::KafkaSettings),
    pub to: (schemas::Region, infra::KafkaSettings),
}

/// The orders/s R1 runs at: a steady trickle, so the figure is the path's, not a queue's.
const RATE: f64 = 100.0;

pub async fn r1_cross_region_visibility(
    ctx: &BenchContext,
    regions: &RegionPair,
    databases: &TempDatabases,
) -> anyhow::Result<Vec<Figure>> {
    let ((from, from_kafka), (to, to_kafka)) = (&regions.from, &regions.to);
    let topic = crate::kit::fresh_topic(from_kafka, "bench-regions", ctx.partitions).await?;
    let specs: Vec<infra::topics::TopicSpec> = schemas::pipeline_topics(&topic)
        .into_iter()
        .map(|name| infra::topics::TopicSpec {
            name,
            partitions: ctx.partitions,
            replication_factor: None,
            configs: Vec::new(),
        })
        .collect();
    infra::topics::create_topics(to_kafka, &specs, Duration::from_secs(30)).await?;
    let publisher = PublisherConfig {
        topic: topic.clone(),
        deadline: Duration::from_secs(10),
        linger_ms: 1,
        codec: schemas::Codec::builtin(),
    };
    let forward_to = std::collections::BTreeMap::new();
    let state = AppState::connect(from_kafka, &ctx.database_url, publisher, ctx.access.clone())
        .await?
        .in_region(checkout::regions::Regions::new(from.clone(), forward_to, Duration::from_secs(10))?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/orders", listener.local_addr()?);
    let server = tokio::spawn(checkout::run(listener, state, std::future::pending()));
    // The reading region: its payment projection, reading the copy of the placing region's log.
    let store = databases.fresh().await?.with_region(Some(to));
    let group = format!("bench-regions-{}", uuid::Uuid::new_v4().simple());
    let mut config = ctx.member_config(ProjectionKind::Payment, &topic, &group)?;
    config.mirrors = vec![from.clone()];
    let member = run_member(config, to_kafka, store.clone())?;
    // MirrorMaker 2 notices a new topic at its next look (every 5 s locally): wait until the
    // copy is there and read before measuring.
    let mut warm = OpenLoop::start(url.clone(), ctx.token.clone(), 5.0, Duration::from_secs(1));
    (&mut warm.task).await?;
    let warmed = warm.accepted_since(0).into_iter().map(|(_, id)| id).collect::<Vec<_>>();
    let deadline = Instant::now() + Duration::from_secs(90);
    while store.reads().orders_shown(&warmed).await?.len() < warmed.len() {
        anyhow::ensure!(Instant::now() < deadline, "the copy of {from}'s log did not reach {to}'s views within 90 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let duration = ctx.run_duration.max(Duration::from_secs(5));
    let load = OpenLoop::start(url, ctx.token.clone(), RATE, duration);
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut latencies = Vec::new();
    let mut taken = 0;
    let deadline = Instant::now() + duration + Duration::from_secs(60);
    loop {
        let done = load.done.load(std::sync::atomic::Ordering::SeqCst);
        let fresh = load.accepted_since(taken);
        taken += fresh.len();
        pending.extend(fresh.into_iter().map(|(at, id)| (id, at)));
        let ids: Vec<String> = pending.keys().cloned().collect();
        let now = Instant::now();
        for id in store.reads().orders_shown(&ids).await? {
            if let Some(at) = pending.remove(&id) {
                latencies.push(now.saturating_duration_since(at).as_secs_f64() * 1000.0);
            }
        }
        if done && pending.is_empty() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{} orders placed in {from} never showed in {to}", pending.len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    load.task.await?;
    member.stop().await?;
    server.abort();
    anyhow::ensure!(taken > 0, "no order was accepted");
    let p50 = percentile(&mut latencies, 50.0);
    let p99 = percentile(&mut latencies, 99.0);
    let detail = format!(
        "{taken} orders at {RATE:.0}/s placed in {from}, read in {to} (checkout, MirrorMaker 2, {to}'s mirror group); \
         p50 {p50:.1} ms, p99 {p99:.1} ms. On a WAN add one round trip between the regions"
    );
    ctx.tick();
    Ok(vec![
        at_most("R1", &format!("202 in {from} → visible in {to} p50"), p50, "ms", 1_000.0, detail.clone()),
        at_most("R1", &format!("202 in {from} → visible in {to} p99"), p99, "ms", 2_000.0, detail),
    ])
}
