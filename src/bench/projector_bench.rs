//! P1 (projector ÷ its ceiling) and P2 (batched ÷ one transaction per event).
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use consumers::member::run_member;
use futures::stream::{self, StreamExt};
use projections::store::{LogRecord, Store};
use projections::ProjectionKind;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use schemas::{samples::sample, Codec, Event};

use super::stats::{describe, ratio, Figure, Samples};
use super::BenchContext;

/// Realistic lifecycles: placed, authorized, captured, packed, shipped, delivered, keyed
/// by order, interleaved across orders as real traffic is.
pub(super) fn lifecycle_events(n: usize) -> Vec<Event> {
    let kinds = schemas::samples::LIFECYCLE;
    let orders = n.div_ceil(kinds.len());
    let ids: Vec<uuid::Uuid> = (0..orders).map(|_| uuid::Uuid::new_v4()).collect();
    let mut events = Vec::with_capacity(n);
    for kind in kinds {
        for id in &ids {
            events.push(schemas::samples::readdressed(sample(kind), *id));
        }
    }
    events.truncate(n);
    events
}

/// Appends the backlog and returns it as the records the log now holds.
pub(super) async fn append_backlog(
    ctx: &BenchContext,
    topic: &str,
    events: &[Event],
) -> anyhow::Result<Vec<LogRecord>> {
    append_backlog_framed(ctx, topic, events, &Codec::builtin()).await
}

/// [`append_backlog`] framed with `codec`'s schema ids (a registry's, say).
pub(super) async fn append_backlog_framed(
    ctx: &BenchContext,
    topic: &str,
    events: &[Event],
    codec: &Codec,
) -> anyhow::Result<Vec<LogRecord>> {
    let producer: FutureProducer =
        ctx.kafka.idempotent_producer(Duration::from_secs(30), Duration::from_millis(5)).create()?;
    let encoded: Vec<(String, Vec<u8>)> =
        events.iter().map(|e| Ok((e.key(), codec.encode(e)?))).collect::<Result<_, schemas::EncodeError>>()?;
    let delivered: Vec<_> = stream::iter(&encoded)
        .map(|(k, v)| producer.send(FutureRecord::to(topic).key(k).payload(v), Duration::from_secs(30)))
        .buffered(2_000)
        .collect()
        .await;
    let mut records = Vec::with_capacity(events.len());
    for ((key, payload), result) in encoded.into_iter().zip(delivered) {
        let d = result.map_err(|(e, _)| anyhow::anyhow!("backlog produce: {e}"))?;
        records.push(LogRecord {
            partition: d.partition,
            offset: d.offset,
            key: Some(key.into_bytes()),
            payload: Some(payload),
            timestamp_ms: None,
            published_by: Some("bench".into()),
            epoch: 1,
            trace_parent: None,
        });
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

/// Raw consume rate: a consumer that decodes nothing and discards every record.
fn raw_consume(ctx: &BenchContext, topic: &str, expected: usize) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = ctx
        .kafka
        // The member's fetch settings, so only the work after the fetch differs.
        .client_config_with(&[
            ("group.id", "bench-raw"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("fetch.wait.max.ms", "10"),
        ])
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..ctx.partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    // Timed from the first record, so connection and offset lookups (which the projector
    // pays too) do not lower the ceiling.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut first: Option<Instant> = None;
    let mut seen = 0usize;
    while seen < expected {
        anyhow::ensure!(Instant::now() < deadline, "raw consumer saw {seen} of {expected} records");
        if let Some(m) = consumer.poll(Duration::from_millis(5)) {
            std::hint::black_box(m?.payload().map(<[u8]>::len));
            first.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    let elapsed = first.map_or(Duration::ZERO, |t| t.elapsed()).max(Duration::from_micros(1));
    Ok((expected - 1) as f64 / elapsed.as_secs_f64())
}

/// DB-only rate: the store's batch path fed from memory, `batch` records per transaction.
async fn db_only(store: &Store, group: &str, topic: &str, records: &[LogRecord], batch: usize) -> anyhow::Result<f64> {
    let codec = Codec::builtin();
    let started = Instant::now();
    let mut read_from: BTreeMap<i32, i64> = BTreeMap::new();
    for chunk in records.chunks(batch) {
        let batch = projections::store::Batch {
            group,
            topic,
            role: schemas::TopicRole::Orders,
            records: chunk,
            read_from: &read_from,
        };
        store.batches().apply(ProjectionKind::Payment, &batch, &codec).await?;
        for r in chunk {
            read_from.insert(r.partition, r.offset + 1);
        }
    }
    Ok(records.len() as f64 / started.elapsed().as_secs_f64())
}

/// The real member runtime draining the backlog.
pub(super) async fn projector(
    ctx: &BenchContext,
    store: &Store,
    kind: ProjectionKind,
    topic: &str,
    records: &[LogRecord],
) -> anyhow::Result<f64> {
    let group = format!("bench-projector-{}", uuid::Uuid::new_v4().simple());
    let config = ctx.member_config(kind, topic, &group)?;
    drain(ctx, store, config, topic, records).await
}

/// A member of `config` draining `records` (the whole of `topic`) into `store`: events/s
/// from its first committed batch until every record is applied.
pub(super) async fn drain(
    ctx: &BenchContext,
    store: &Store,
    config: consumers::MemberConfig,
    topic: &str,
    records: &[LogRecord],
) -> anyhow::Result<f64> {
    let group = config.group.clone();
    let ends: BTreeMap<i32, i64> = records.iter().map(|r| (r.partition, r.offset + 1)).collect();
    let partitions: Vec<i32> = ends.keys().copied().collect();
    let member = run_member(config, &ctx.kafka, store.clone())?;
    let deadline = Instant::now() + Duration::from_secs(180);
    // Timed from the first committed batch, like the raw consumer from its first record:
    // joining the group and looking up offsets are not what P1 compares.
    let mut first: Option<(Instant, i64)> = None;
    loop {
        let stored: BTreeMap<i32, i64> =
            store.reads().stored_offsets(&group, topic, &partitions).await?.into_iter().collect();
        if first.is_none() && !stored.is_empty() {
            first = Some((Instant::now(), stored.values().sum()));
        }
        if crate::kit::reached(&stored, &ends) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "projector did not drain the backlog");
        // Often enough to time a run of seconds to within 1%, rarely enough that the
        // looking costs the database nothing the projector would notice.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (t0, done_at_t0) = first.unwrap_or((Instant::now(), 0));
    let rate = (records.len() as i64 - done_at_t0).max(1) as f64 / t0.elapsed().as_secs_f64().max(1e-6);
    member.stop().await?;
    Ok(rate)
}

pub struct ProjectorFigures {
    pub p1: Figure,
    pub p2: Option<Figure>,
}

/// P1 on one database, and on PostgreSQL (`postgres` given: where its fresh databases
/// come from) P2 and the `COPY` ceiling.
pub async fn p1_p2(
    ctx: &BenchContext,
    database_label: &str,
    new_store: impl AsyncFn() -> anyhow::Result<Store>,
    postgres: Option<&crate::kit::TempDatabases>,
) -> anyhow::Result<ProjectorFigures> {
    let with_p2 = postgres.is_some();
    let topic = ctx.fresh_topic("bench-projector").await?;
    // Five times the producer's events: a backlog of some twenty of the projector's
    // batches, so that timing from its first commit measures more than a few of them.
    let events = lifecycle_events(ctx.events * 5);
    let records = append_backlog(ctx, &topic, &events).await?;
    // The ceiling and the store fed from memory take the projector's own batches.
    let batch = ctx.member.batch_max;
    let empty = || Samples { runs: vec![] };
    let (mut raw, mut db, mut proj, mut bulk) = (empty(), empty(), empty(), empty());
    for _ in 0..ctx.repeats {
        raw.runs.push(raw_consume(ctx, &topic, records.len())?);
        if let Some(databases) = postgres {
            let url = databases.fresh_url().await?;
            drop(Store::connect(&url).await?);
            bulk.runs.push(super::copy_ceiling::copy_ceiling(&url, &records, batch).await?);
        }
        let store = new_store().await?;
        db.runs.push(db_only(&store, "bench-db-only", &topic, &records, batch).await?);
        let store = new_store().await?;
        proj.runs.push(projector(ctx, &store, ProjectionKind::Payment, &topic, &records).await?);
        ctx.tick();
    }
    // The ceiling is what the machine allows: the broker's raw consume rate, or on
    // PostgreSQL its bulk path for the same batches. SQLite has no bulk path beyond what the
    // store does, so there its own store code fed from memory stands in.
    let (ceiling, ceiling_name) = match (postgres.is_some(), raw.median() < bulk.median()) {
        (true, false) => (&bulk, "COPY"),
        (false, _) if db.median() < raw.median() => (&db, "DB-only"),
        _ => (&raw, "raw consume"),
    };
    let bulk_text = if postgres.is_some() {
        format!("; PostgreSQL COPY path ({batch}/tx) {}", describe(&bulk, "events/s"))
    } else {
        String::new()
    };
    let p1 = ratio(
        "P1",
        &format!("projector ÷ ceiling ({database_label}, {ceiling_name})"),
        &proj,
        ceiling,
        0.8,
        format!(
            "payment projection, {} events: projector {}; raw consume {}{bulk_text}; our store fed from memory ({batch}/tx) {} (projector ÷ that {:.2})",
            records.len(),
            describe(&proj, "events/s"),
            describe(&raw, "records/s"),
            describe(&db, "events/s"),
            proj.median() / db.median().max(1e-9),
        ),
    );
    let p2 = if with_p2 {
        let naive_records = &records[..records.len().min(2_000)];
        let mut naive = Samples { runs: vec![] };
        for _ in 0..ctx.repeats {
            let store = new_store().await?;
            naive.runs.push(db_only(&store, "bench-naive", &topic, naive_records, 1).await?);
        }
        Some(ratio(
            "P2",
            &format!("batched ÷ naive ({database_label})"),
            &db,
            &naive,
            20.0,
            format!(
                "same store code and durability; batched {}, one transaction per event {} ({} events)",
                describe(&db, "events/s"),
                describe(&naive, "events/s"),
                naive_records.len()
            ),
        ))
    } else {
        None
    };
    Ok(ProjectorFigures { p1, p2 })
}

/// P1 of the history projection on PostgreSQL: its member draining a backlog ÷ the lesser
/// of the raw consume rate and PostgreSQL's `COPY` of the same rows straight into
/// `history_entries` (one transaction per batch, with its offsets).
pub async fn p1_history(ctx: &BenchContext, databases: &crate::kit::TempDatabases) -> anyhow::Result<Figure> {
    let topic = ctx.fresh_topic("bench-history").await?;
    let events = lifecycle_events(ctx.events * 5);
    let records = append_backlog(ctx, &topic, &events).await?;
    // The ceiling takes the projector's own batches.
    let batch = ctx.member.batch_max;
    let empty = || Samples { runs: vec![] };
    let (mut raw, mut proj, mut bulk) = (empty(), empty(), empty());
    for _ in 0..ctx.repeats {
        raw.runs.push(raw_consume(ctx, &topic, records.len())?);
        let url = databases.fresh_url().await?;
        drop(Store::connect(&url).await?);
        bulk.runs.push(super::copy_ceiling::history_copy_ceiling(&url, &records, batch).await?);
        let store = databases.fresh().await?;
        proj.runs.push(projector(ctx, &store, ProjectionKind::History, &topic, &records).await?);
        ctx.tick();
    }
    let (ceiling, ceiling_name) = if raw.median() < bulk.median() { (&raw, "raw consume") } else { (&bulk, "COPY") };
    Ok(ratio(
        "P1h",
        &format!("history ÷ ceiling (PostgreSQL, {ceiling_name})"),
        &proj,
        ceiling,
        0.9,
        format!(
            "history projection, {} events: projector {}; raw consume {}; COPY of its rows into history_entries ({batch}/tx) {}",
            records.len(),
            describe(&proj, "events/s"),
            describe(&raw, "records/s"),
            describe(&bulk, "events/s"),
        ),
    ))
}
