//! P4 (produce → visible latency), P5 (replay ÷ live) and P7 (consumer peak memory).
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::load::{http_client_with, post_json};
use consumers::member::{run_member, MemberHandle};
use producers::checkout::{self, AppState};
use producers::publisher::PublisherConfig;
use projections::ProjectionKind;
use serde_json::json;

use super::projector_bench::{append_backlog, lifecycle_events, projector};
use super::stats::{at_most, describe, percentile, ratio, Figure, Samples};
use super::BenchContext;
use crate::kit::{self, TempDatabases};

/// Orders accepted in a closed-loop burst ÷ the time until every group has applied them.
async fn max_sustainable_rate(
    store: &projections::store::Store,
    url: &str,
    topic: &str,
    members: &[(ProjectionKind, String, MemberHandle)],
    ctx: &BenchContext,
) -> anyhow::Result<f64> {
    let burst_started = Instant::now();
    let burst_rate = super::checkout_bench::drive(url, &ctx.token, 64, Duration::from_secs(3), false).await?.per_second;
    let burst_orders = burst_rate * 3.0;
    let ends = kit::log_ends(&ctx.kafka, topic).await?;
    for (_, group, _) in members {
        let within = Duration::from_secs(120);
        let caught_up = kit::wait_caught_up(store, group, topic, &ends, within, Duration::from_millis(5)).await?;
        anyhow::ensure!(caught_up, "the pipeline did not catch up after the burst");
    }
    Ok(burst_orders / burst_started.elapsed().as_secs_f64())
}

/// P4: orders placed through the real API at half the pipeline's max sustainable rate, then
/// at a fixed 2,000 orders/s (where the target is set); for each, the time from its 202
/// until each projection's stored offset for its partition has passed its position. The
/// max sustainable rate is measured first, on the same pipeline: orders accepted in a
/// closed-loop burst ÷ the time until every group has applied them.
pub async fn p4_latency(ctx: &BenchContext, databases: &TempDatabases) -> anyhow::Result<Vec<Figure>> {
    let topic = ctx.fresh_topic("bench-latency").await?;
    let store = databases.fresh().await?;
    let publisher = PublisherConfig {
        topic: topic.clone(),
        deadline: Duration::from_secs(10),
        linger_ms: 1,
        codec: schemas::Codec::builtin(),
    };
    let state = AppState::connect(&ctx.kafka, &ctx.database_url, publisher, ctx.access.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/orders", listener.local_addr()?);
    let server = tokio::spawn(checkout::run(listener, state, std::future::pending()));
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut members: Vec<(ProjectionKind, String, MemberHandle)> = Vec::new();
    // The projections an order's own events reach; the inventory reads only decisions, whose
    // latency is P6's.
    for kind in ProjectionKind::ALL.into_iter().filter(|k| k.reads().contains(&schemas::TopicRole::Orders)) {
        let group = format!("bench-latency-{}-{run_id}", kind.name());
        members.push((
            kind,
            group.clone(),
            run_member(ctx.member_config(kind, &topic, &group)?, &ctx.kafka, store.clone())?,
        ));
    }
    // Let the groups settle before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rate, rate_note) = match ctx.latency_rate {
        Some(rate) => (rate, format!("a fixed {rate:.0} orders/s (--latency-rate)")),
        None => {
            let sustainable = max_sustainable_rate(&store, &url, &topic, &members, ctx).await?;
            ((sustainable * 0.5).max(1.0), format!("50% of the pipeline's max sustainable {sustainable:.0} orders/s"))
        }
    };
    let mut figures = Vec::new();
    for (rate, rate_note, _) in latency_rates((rate, rate_note), P4_FIXED_RATE) {
        figures.extend(p4_at(ctx, &store, &url, &topic, &members, rate, &rate_note).await?);
    }
    for (_, _, m) in members {
        m.stop().await?;
    }
    server.abort();
    ctx.tick();
    Ok(figures)
}

/// The fixed rate P4's p99 target is set at (the same load whatever the machine's max).
const P4_FIXED_RATE: f64 = 2_000.0;

/// The rates a latency figure is measured at, each with what it is and whether it is
/// `fixed`: `chosen` (half the measured max, or `--latency-rate`), then `fixed`, the rate
/// the target is set at, unless `chosen` is that rate already.
pub(super) fn latency_rates(chosen: (f64, String), fixed: f64) -> Vec<(f64, String, bool)> {
    let (rate, note) = chosen;
    let chosen_is_fixed = (rate - fixed).abs() < 1.0;
    let mut rates = vec![(rate, note, chosen_is_fixed)];
    if !chosen_is_fixed {
        rates.push((fixed, format!("a fixed {fixed:.0} orders/s, the rate of the target"), true));
    }
    rates
}

/// P4's figures at one rate: an open loop of orders for the run's duration, each order
/// timed until every group has applied it.
async fn p4_at(
    ctx: &BenchContext,
    store: &projections::store::Store,
    url: &str,
    topic: &str,
    members: &[(ProjectionKind, String, MemberHandle)],
    rate: f64,
    rate_note: &str,
) -> anyhow::Result<Vec<Figure>> {
    let timings_before: Vec<consumers::member::Timings> = members.iter().map(|(_, _, m)| m.stats.timings()).collect();
    let duration = ctx.run_duration.max(Duration::from_secs(3));
    let load = OpenLoop::start(url.to_string(), ctx.token.clone(), rate, duration);
    let (latencies, taken) =
        track_visibility(store, topic, members, &load, Instant::now() + duration + Duration::from_secs(60)).await?;
    load.task.await?;
    anyhow::ensure!(taken > 0, "no order was accepted");
    let breakdown = breakdown_since(members, &timings_before);
    let mut figures = Vec::new();
    for (kind, mut values) in latencies {
        anyhow::ensure!(values.len() == taken, "{kind}: {} of {taken} orders became visible", values.len());
        let p50 = percentile(&mut values, 50.0);
        let p99 = percentile(&mut values, 99.0);
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let detail = format!(
            "{} orders at {rate:.0}/s = {rate_note} (checkout + {} groups in one process); p50 {p50:.1} ms, p99 {p99:.1} ms, mean {mean:.1} ms; {}",
            taken,
            members.len(),
            breakdown.get(&kind).map_or("no breakdown", String::as_str)
        );
        let at = format!("{kind}, {rate:.0}/s");
        figures.push(at_most("P4", &format!("202 → visible p50 ({at})"), p50, "ms", 25.0, detail.clone()));
        figures.push(at_most("P4", &format!("202 → visible p99 ({at})"), p99, "ms", 100.0, detail));
    }
    // The next rate starts from a pipeline that has applied everything of this one:
    // `track_visibility` returned only once every group had applied every accepted order.
    Ok(figures)
}

/// Orders placed at a fixed rate whatever the answers' latency (an open loop), each
/// accepted one recorded as (when its 202 arrived, partition, offset).
pub(super) struct OpenLoop {
    acked: Arc<Mutex<Vec<(Instant, i32, i64)>>>,
    /// The order id of each accepted order, in the same order as `acked`.
    pub order_ids: Arc<Mutex<Vec<String>>>,
    pub done: Arc<std::sync::atomic::AtomicBool>,
    pub task: tokio::task::JoinHandle<()>,
}

impl OpenLoop {
    /// (when the 202 arrived, order id) of the accepted orders from `from` on.
    pub(super) fn accepted_since(&self, from: usize) -> Vec<(Instant, String)> {
        let acked = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        let ids = self.order_ids.lock().unwrap_or_else(|e| e.into_inner());
        acked.iter().zip(ids.iter()).skip(from).map(|((at, _, _), id)| (*at, id.clone())).collect()
    }

    pub(super) fn start(url: String, token: String, rate: f64, duration: Duration) -> OpenLoop {
        let acked: Arc<Mutex<Vec<(Instant, i32, i64)>>> = Arc::default();
        let order_ids: Arc<Mutex<Vec<String>>> = Arc::default();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let body = json!({"customer_id":"c-1","currency":"EUR","lines":[{"sku":"SKU-1","quantity":1,"unit_price_minor":100}],"ship_to":{"country":"DE"}});
        let (task_acked, task_done, task_ids) = (acked.clone(), done.clone(), order_ids.clone());
        let task = tokio::spawn(async move {
            let client = http_client_with(Some(&token));
            let started = Instant::now();
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            let mut requests = Vec::new();
            while started.elapsed() < duration {
                tick.tick().await;
                let due = (started.elapsed().as_secs_f64() * rate) as u64;
                while sent < due {
                    sent += 1;
                    let (client, body, url) = (client.clone(), body.clone(), url.clone());
                    let (acked, ids) = (task_acked.clone(), task_ids.clone());
                    requests.push(tokio::spawn(async move {
                        if let Ok((202, answer)) = post_json(&client, &url, &body, None).await {
                            let at = Instant::now();
                            let p = answer["position"]["partition"].as_i64().unwrap_or(-1) as i32;
                            let o = answer["position"]["offset"].as_i64().unwrap_or(-1);
                            let id = answer["order_id"].as_str().unwrap_or_default().to_string();
                            // One lock order (acked, then ids), so the two lists stay aligned.
                            let mut acked = acked.lock().unwrap_or_else(|e| e.into_inner());
                            acked.push((at, p, o));
                            ids.lock().unwrap_or_else(|e| e.into_inner()).push(id);
                        }
                    }));
                }
            }
            for r in requests {
                let _ = r.await;
            }
            task_done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        OpenLoop { acked, order_ids, done, task }
    }
}

/// Watches every group's stored offsets while the load runs; an order is visible in a
/// projection once that group's next offset for its partition is above its offset.
/// Returns the milliseconds from 202 to visible per projection, and how many orders were
/// accepted.
async fn track_visibility(
    store: &projections::store::Store,
    topic: &str,
    members: &[(ProjectionKind, String, MemberHandle)],
    load: &OpenLoop,
    deadline: Instant,
) -> anyhow::Result<(BTreeMap<ProjectionKind, Vec<f64>>, usize)> {
    let mut pending: HashMap<ProjectionKind, Vec<(Instant, i32, i64)>> = HashMap::new();
    let mut latencies: BTreeMap<ProjectionKind, Vec<f64>> = BTreeMap::new();
    let mut taken = 0;
    loop {
        let done = load.done.load(std::sync::atomic::Ordering::SeqCst);
        {
            let all = load.acked.lock().unwrap_or_else(|e| e.into_inner());
            for (kind, _, _) in members {
                pending.entry(*kind).or_default().extend_from_slice(&all[taken..]);
            }
            taken = all.len();
        }
        // One query for every group: the tracker should cost the pipeline as little as it can.
        let all_offsets = store.reads().all_group_offsets(topic).await?;
        let now = Instant::now();
        for (kind, group, _) in members {
            let stored: HashMap<i32, i64> =
                all_offsets.iter().filter(|o| &o.group == group).map(|o| (o.partition, o.next_offset)).collect();
            if let Some(list) = pending.get_mut(kind) {
                list.retain(|(at, p, o)| {
                    let visible = stored.get(p).is_some_and(|next| next > o);
                    if visible {
                        let ms = now.saturating_duration_since(*at).as_secs_f64() * 1000.0;
                        latencies.entry(*kind).or_default().push(ms);
                    }
                    !visible
                });
            }
        }
        if done && pending.values().all(Vec::is_empty) {
            return Ok((latencies, taken));
        }
        anyhow::ensure!(Instant::now() < deadline, "orders did not become visible");
        // Every 2 ms: finer polling would itself take the CPU the pipeline needs.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Where a record's time went inside each member since `before` (means per record).
fn breakdown_since(
    members: &[(ProjectionKind, String, MemberHandle)],
    before: &[consumers::member::Timings],
) -> BTreeMap<ProjectionKind, String> {
    members
        .iter()
        .zip(before)
        .filter_map(|((kind, _, m), before)| {
            Some((*kind, format!("mean per record: {}", super::stats::time_inside(before, &m.stats.timings())?)))
        })
        .collect()
}

/// P5: the projector rebuilding from offset 0 ÷ the same projector keeping up while the
/// events are being produced.
pub async fn p5_replay(ctx: &BenchContext, databases: &TempDatabases) -> anyhow::Result<Figure> {
    let (mut live, mut replay) = (Samples { runs: vec![] }, Samples { runs: vec![] });
    for _ in 0..ctx.repeats {
        let topic = ctx.fresh_topic("bench-replay").await?;
        let events = lifecycle_events(ctx.events);
        let store = databases.fresh().await?;
        let group = format!("bench-live-{}", uuid::Uuid::new_v4().simple());
        let handle =
            run_member(ctx.member_config(ProjectionKind::Payment, &topic, &group)?, &ctx.kafka, store.clone())?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let started = Instant::now();
        let records = append_backlog(ctx, &topic, &events).await?;
        let ends: BTreeMap<i32, i64> = records.iter().map(|r| (r.partition, r.offset + 1)).collect();
        let within = Duration::from_secs(180);
        let kept_up = kit::wait_caught_up(&store, &group, &topic, &ends, within, Duration::from_millis(2)).await?;
        anyhow::ensure!(kept_up, "live projector did not keep up");
        live.runs.push(records.len() as f64 / started.elapsed().as_secs_f64());
        handle.stop().await?;
        replay.runs.push(projector(ctx, &databases.fresh().await?, ProjectionKind::Payment, &topic, &records).await?);
        ctx.tick();
    }
    Ok(ratio(
        "P5",
        "replay ÷ live",
        &replay,
        &live,
        1.0,
        format!(
            "payment projection, {} events: rebuild from offset 0 {}; live (producing while projecting) {}",
            ctx.events,
            describe(&replay, "events/s"),
            describe(&live, "events/s")
        ),
    ))
}

/// P7: peak resident memory of an `orderflow consume` process draining a large backlog.
pub async fn p7_memory(ctx: &BenchContext, databases: &TempDatabases) -> anyhow::Result<Figure> {
    let topic = ctx.fresh_topic("bench-memory").await?;
    let n = (ctx.events * 5).max(50_000);
    let records = append_backlog(ctx, &topic, &lifecycle_events(n)).await?;
    let database_url = databases.fresh_url().await?;
    let store = projections::store::Store::connect(&database_url).await?;
    let group = format!("bench-memory-{}", uuid::Uuid::new_v4().simple());
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["consume", "payment", "--topic", &topic, "--group", &group, "--brokers", &ctx.kafka.brokers])
        .env("ORDERFLOW_DATABASE_URL", &database_url)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let ends: BTreeMap<i32, i64> = records.iter().map(|r| (r.partition, r.offset + 1)).collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    let peak = loop {
        let drained = kit::has_caught_up(&store, &group, &topic, &ends).await?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        let peak_kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN);
        if drained {
            break peak_kib / 1024.0;
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            anyhow::bail!("the consumer process did not drain the backlog");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    ctx.tick();
    Ok(at_most(
        "P7",
        "consumer peak RSS",
        peak,
        "MiB",
        100.0,
        format!("`orderflow consume payment` draining {n} events (VmHWM of the process)"),
    ))
}
