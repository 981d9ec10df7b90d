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

/// Closed loop: `concurrency` clients POST the same body for `duration`; returns accepted/s.
pub(super) async fn drive(url: &str, token: &str, concurrency: usize, duration: Duration) -> anyhow::Result<f64> {
    let client = http_client_with(Some(token));
    let body = order_body();
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, body, url) = (client.clone(), body.clone(), url.to_string());
            tokio::spawn(async move {
                let mut accepted = 0u64;
                while Instant::now() < deadline {
                    match post_json(&client, &url, &body, None).await {
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
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

pub async fn p3_checkout_vs_http(ctx: &BenchContext) -> anyhow::Result<Figure> {
    let topic = ctx.fresh_topic("bench-checkout").await?;
    let config =
        PublisherConfig { topic, deadline: Duration::from_secs(10), linger_ms: 2, codec: schemas::Codec::builtin() };
    let state = AppState::connect(&ctx.kafka, &ctx.database_url, config, ctx.access.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    // The product's routes plus the bench's own do-nothing one, behind the same layers.
    let access = ctx.access.clone();
    let app = checkout::routes().route(infra::http::Need::Authenticated, utoipa_axum::routes!(noop)).finish(
        state,
        infra::http::CHECKOUT_METRICS,
        access,
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let concurrency = ctx.http_clients;
    let run = ctx.run_duration;
    // Warm up both paths, then alternate so drift hits both sides alike.
    drive(&format!("{base}/orders"), &ctx.token, concurrency, Duration::from_secs(1)).await?;
    drive(&format!("{base}/bench/noop"), &ctx.token, concurrency, Duration::from_secs(1)).await?;
    let (mut api, mut ceiling) = (Samples { runs: vec![] }, Samples { runs: vec![] });
    for _ in 0..ctx.repeats {
        ceiling.runs.push(drive(&format!("{base}/bench/noop"), &ctx.token, concurrency, run).await?);
        api.runs.push(drive(&format!("{base}/orders"), &ctx.token, concurrency, run).await?);
        ctx.tick();
    }
    server.abort();
    Ok(ratio(
        "P3",
        "checkout ÷ HTTP ceiling",
        &api,
        &ceiling,
        0.7,
        format!(
            "POST /orders {}, do-nothing endpoint {}; {concurrency} closed-loop clients in-process, no Idempotency-Key",
            describe(&api, "accepted/s"),
            describe(&ceiling, "req/s")
        ),
    ))
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
