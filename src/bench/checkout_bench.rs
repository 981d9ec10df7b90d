//! P3 (checkout ÷ HTTP ceiling) and P3b (publisher ÷ raw producer).
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load::{http_client_with, post_json};
use futures::stream::{self, StreamExt};
use producers::checkout::{self, AppState};
use producers::publisher::{Publisher, PublisherConfig};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{samples::sample, Envelope, Event, EventKind};
use serde_json::json;

use super::stats::{describe, ratio, Figure, Samples};
use super::BenchContext;

fn order_body() -> serde_json::Value {
    json!({"customer_id":"c-1","currency":"EUR",
           "lines":[{"sku":"SKU-1","quantity":2,"unit_price_minor":1999},{"sku":"SKU-2","quantity":1,"unit_price_minor":499}],
           "ship_to":{"country":"DE","postal_code":"10115"}})
}

/// What one closed-loop run measured.
pub(super) struct Run {
    pub per_second: f64,
    /// CPU seconds per answered request: this process (server and load generator), and
    /// the whole machine (broker and database too).
    cpu_process_us: f64,
    cpu_machine_us: f64,
}

/// CPU time used so far: (this process, every process on the machine), in seconds.
fn cpu_seconds() -> (f64, f64) {
    (super::stats::process_cpu_seconds("self"), super::stats::machine_cpu_seconds())
}

/// Closed loop: `concurrency` clients POST the same body for `duration`, each request
/// under a new Idempotency-Key when `keyed`; returns accepted/s and CPU per request.
pub(super) async fn drive(
    url: &str,
    token: &str,
    concurrency: usize,
    duration: Duration,
    keyed: bool,
) -> anyhow::Result<Run> {
    let client = http_client_with(Some(token));
    let body = order_body();
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, body, url) = (client.clone(), body.clone(), url.to_string());
            tokio::spawn(async move {
                let mut accepted = 0u64;
                while Instant::now() < deadline {
                    let key = keyed.then(|| uuid::Uuid::new_v4().to_string());
                    match post_json(&client, &url, &body, key.as_deref()).await {
                        Ok((202, _)) => accepted += 1,
                        Ok((status, answer)) => return Err(anyhow::anyhow!("{url} answered {status}: {answer}")),
                        Err(e) => return Err(anyhow::anyhow!("{url}: {e}")),
                    }
                }
                Ok(accepted)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds();
    let per = |before: f64, after: f64| (after - before) / (total.max(1) as f64) * 1e6;
    Ok(Run {
        per_second: total as f64 / elapsed,
        cpu_process_us: per(cpu_before.0, cpu_after.0),
        cpu_machine_us: per(cpu_before.1, cpu_after.1),
    })
}

/// The durable ceiling's shared parts: a PostgreSQL pool and a bare producer with the
/// publisher's settings.
struct Durable {
    pool: sqlx::PgPool,
    producer: FutureProducer,
    topic: String,
}

static DURABLE: std::sync::OnceLock<Durable> = std::sync::OnceLock::new();

pub async fn p3_checkout_vs_http(ctx: &BenchContext) -> anyhow::Result<Vec<Figure>> {
    let topic = ctx.fresh_topic("bench-checkout").await?;
    let config = PublisherConfig {
        topic: topic.clone(),
        deadline: Duration::from_secs(10),
        linger_ms: 2,
        codec: schemas::Codec::builtin(),
    };
    let state = AppState::connect(&ctx.kafka, &ctx.database_url, config, ctx.access.clone()).await?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&ctx.database_url).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_durable (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    let producer: FutureProducer =
        ctx.kafka.idempotent_producer(Duration::from_secs(10), Duration::from_millis(2)).create()?;
    if DURABLE.set(Durable { pool, producer, topic }).is_err() {
        anyhow::bail!("the P3 ceiling runs once per process");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    // The product's routes plus the bench's own ceilings, behind the same layers.
    let access = ctx.access.clone();
    let app = checkout::routes()
        .route(infra::http::Need::Authenticated, utoipa_axum::routes!(noop))
        .route(infra::http::Need::Authenticated, utoipa_axum::routes!(durable))
        .finish(state, infra::http::CHECKOUT_METRICS, access);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let concurrency = ctx.http_clients;
    let run = ctx.run_duration;
    let (orders, noop_url, durable_url) =
        (format!("{base}/orders"), format!("{base}/bench/noop"), format!("{base}/bench/durable"));
    // Warm up every path, then alternate so drift hits all sides alike.
    for (url, keyed) in [(&orders, true), (&noop_url, false), (&durable_url, true)] {
        drive(url, &ctx.token, concurrency, Duration::from_secs(1), keyed).await?;
    }
    let empty = || Samples { runs: vec![] };
    let (mut api, mut api_unkeyed, mut ceiling, mut durable_ceiling) = (empty(), empty(), empty(), empty());
    let mut cpu: [Vec<(f64, f64)>; 3] = Default::default();
    for _ in 0..ctx.repeats {
        let r = drive(&noop_url, &ctx.token, concurrency, run, false).await?;
        ceiling.runs.push(r.per_second);
        cpu[0].push((r.cpu_process_us, r.cpu_machine_us));
        let r = drive(&durable_url, &ctx.token, concurrency, run, true).await?;
        durable_ceiling.runs.push(r.per_second);
        cpu[1].push((r.cpu_process_us, r.cpu_machine_us));
        let r = drive(&orders, &ctx.token, concurrency, run, true).await?;
        api.runs.push(r.per_second);
        cpu[2].push((r.cpu_process_us, r.cpu_machine_us));
        api_unkeyed.runs.push(drive(&orders, &ctx.token, concurrency, run, false).await?.per_second);
        ctx.tick();
    }
    server.abort();
    // The ceiling's rows are the bench's own: nothing of them stays in the database.
    if let Some(d) = DURABLE.get() {
        sqlx::query("DROP TABLE IF EXISTS bench_durable").execute(&d.pool).await?;
    }
    let median =
        |runs: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| Samples { runs: runs.iter().map(pick).collect() }.median();
    let cpu_text =
        |i: usize| format!("{:.0} µs process / {:.0} µs machine", median(&cpu[i], |c| c.0), median(&cpu[i], |c| c.1));
    // The definition of earlier rounds: orders without keys ÷ the do-nothing route.
    let old = ratio(
        "P3",
        "checkout ÷ HTTP ceiling",
        &api_unkeyed,
        &ceiling,
        0.5,
        format!(
            "POST /orders without keys {}, do-nothing endpoint {}; {concurrency} closed-loop clients in-process; with an Idempotency-Key each {} (÷ do-nothing {:.2}); CPU per request: keyed orders {}, do-nothing {}",
            describe(&api_unkeyed, "accepted/s"),
            describe(&ceiling, "req/s"),
            describe(&api, "accepted/s"),
            api.median() / ceiling.median().max(1e-9),
            cpu_text(2),
            cpu_text(0),
        ),
    );
    let new = ratio(
        "P3d",
        "checkout ÷ durable ceiling",
        &api,
        &durable_ceiling,
        0.7,
        format!(
            "orders with an Idempotency-Key each ÷ a route doing the same durable work and nothing else (read the body, one PostgreSQL insert committed, one record produced and acknowledged) {}; CPU per request: orders {}, durable ceiling {}",
            describe(&durable_ceiling, "req/s"),
            cpu_text(2),
            cpu_text(1),
        ),
    );
    Ok(vec![old, new])
}

fn events(n: usize) -> Vec<Event> {
    let template = sample(EventKind::OrderPlaced);
    (0..n)
        .map(|_| {
            let mut event = template.clone();
            if let Event::OrderPlaced(e) = &mut event {
                e.order_id = uuid::Uuid::new_v4();
                e.envelope = Envelope {
                    event_id: uuid::Uuid::new_v4(),
                    occurred_at: Envelope::now(),
                    correlation_id: e.order_id,
                    causation_id: None,
                };
            }
            event
        })
        .collect()
}

const IN_FLIGHT: usize = 2_000;

async fn publish_all(publisher: &Publisher, events: &[Event]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let results: Vec<_> =
        stream::iter(events).map(|e| publisher.publish(e, "bench")).buffer_unordered(IN_FLIGHT).collect().await;
    let elapsed = started.elapsed();
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(events.len() as f64 / elapsed.as_secs_f64())
}

async fn produce_raw(producer: &FutureProducer, topic: &str, records: &[(String, Vec<u8>)]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let results: Vec<_> = stream::iter(records)
        .map(|(key, payload)| producer.send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(10)))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed();
    for r in results {
        r.map_err(|(e, _)| anyhow::anyhow!("raw produce: {e}"))?;
    }
    Ok(records.len() as f64 / elapsed.as_secs_f64())
}

pub async fn p3b_publisher_vs_raw(ctx: &BenchContext) -> anyhow::Result<Figure> {
    let topic = ctx.fresh_topic("bench-publish").await?;
    let config = PublisherConfig {
        topic: topic.clone(),
        deadline: Duration::from_secs(30),
        linger_ms: 2,
        codec: schemas::Codec::builtin(),
    };
    let publisher = Arc::new(Publisher::new(&ctx.kafka, config)?);
    // The bare producer gets exactly the publisher's settings and the same encoded bytes.
    let raw: FutureProducer =
        ctx.kafka.idempotent_producer(Duration::from_secs(35), Duration::from_millis(2)).create()?;
    let n = ctx.events;
    let batch = events(n);
    let encoded: Vec<(String, Vec<u8>)> = batch
        .iter()
        .map(|e| Ok((e.key(), publisher.codec().encode(e)?)))
        .collect::<Result<_, schemas::EncodeError>>()?;
    publish_all(&publisher, &batch[..n / 10]).await?;
    produce_raw(&raw, &topic, &encoded[..n / 10]).await?;
    let (mut ours, mut bare) = (Samples { runs: vec![] }, Samples { runs: vec![] });
    for _ in 0..ctx.repeats {
        bare.runs.push(produce_raw(&raw, &topic, &encoded).await?);
        ours.runs.push(publish_all(&publisher, &batch).await?);
        ctx.tick();
    }
    Ok(ratio(
        "P3b",
        "publisher ÷ raw producer",
        &ours,
        &bare,
        0.5,
        format!(
            "publish path (encode + produce + await ack) {}, bare rdkafka producer on the same bytes {}; {n} events, {IN_FLIGHT} in flight, acks=all, idempotent",
            describe(&ours, "events/s"),
            describe(&bare, "events/s")
        ),
    ))
}

/// Reads the body like a real route and does nothing else: the benchmark's HTTP ceiling,
/// mounted by the bench only.
#[utoipa::path(post, path = "/bench/noop", tag = "bench", responses((status = 202, description = "Read and ignored")))]
async fn noop(body: axum::body::Body) -> axum::response::Response {
    use axum::response::IntoResponse;
    match axum::body::to_bytes(body, producers::checkout::MAX_BODY_BYTES).await {
        Ok(_) => (axum::http::StatusCode::ACCEPTED, axum::Json(serde_json::json!({}))).into_response(),
        Err(_) => axum::http::StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    }
}

/// The durable ceiling: what any checkout must do per accepted request at the least —
/// read the body, commit one row to PostgreSQL, have one record acknowledged by the
/// broker — with nothing of ours in between. Mounted by the bench only.
#[utoipa::path(post, path = "/bench/durable", tag = "bench", responses((status = 202, description = "Stored and appended")))]
async fn durable(body: axum::body::Body) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let Ok(bytes) = axum::body::to_bytes(body, producers::checkout::MAX_BODY_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let Some(d) = DURABLE.get() else { return StatusCode::SERVICE_UNAVAILABLE.into_response() };
    let id = uuid::Uuid::new_v4().to_string();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if sqlx::query("INSERT INTO bench_durable (id, body) VALUES ($1, $2)")
        .bind(&id)
        .bind(&text)
        .execute(&d.pool)
        .await
        .is_err()
    {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let record = FutureRecord::to(&d.topic).key(&id).payload(&bytes[..]);
    match d.producer.send(record, Duration::from_secs(10)).await {
        Ok(_) => (StatusCode::ACCEPTED, axum::Json(serde_json::json!({ "id": id }))).into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
