//! `orderflow region takeover|fence|tail|status`: a region declared lost, its orders
//! handed to another (see `schemas::Owners` for the rules every reader follows).
//!
//! With two regions nobody can safely elect a new owner automatically (each side sees the
//! other gone, whether it is down or only cut off), so a person decides: the operator of
//! the region that takes over runs `region takeover`, with its own brokers and database.
//! The takeover:
//!
//! 1. fences the mirror of the lost region's pipeline into this region (deny ACLs on the
//!    copies `<lost>.<topic>` at this region's broker: its late tail is not copied in);
//! 2. fences the lost region at its own broker (deny Write on its pipeline's topics) when
//!    that broker answers; when it does not, the fence is pending and `region fence` puts
//!    it up, before anything of the lost region is started again;
//! 3. takes the cut: where each partition of the copies ends now, with its last event id;
//! 4. recovers the lost region's orders from the copies up to the cut, exactly as a
//!    rebuild of the order process would, and installs them in this region's order
//!    process together with the handover (one transaction); decisions the lost region had
//!    not published and stock requests its stock group never decided go out from here,
//!    under the new epoch, decided on this region's stock;
//! 5. appends the handover to this region's control topic (`regions-<topic>`), which
//!    MirrorMaker 2 copies to the other regions, and records it in the lost region's
//!    database when that answers.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use infra::fence;
use infra::log_reader::{self, StoredRecord};
use projections::process::recover::{self, LoggedInput, Published};
use projections::registry::{GroupKind, ProcessKind};
use projections::store::{ProcessSettings, Store};
use schemas::{CutPoint, Event, Handover, Owners, Region, StockAction, TopicRole};

use crate::args::{KafkaArgs, OperatorArgs, PipelineArgs, SchemaRegistryArgs};
use crate::recover_cmd::read_log;
use crate::region_io::{append_handover, event_id_in, event_id_of, lost_region_fence, mirror_fence};

/// How long the log may stay silent while a read still expects records from it.
const STALL: Duration = Duration::from_secs(30);

#[derive(Debug, Subcommand)]
pub enum RegionCommand {
    /// Hand a lost region's orders to this region (run in the region that takes over).
    Takeover(TakeoverArgs),
    /// Put up (again) the fence of a region taken over, at its own brokers: run it before
    /// anything of that region is started again.
    Fence(FenceArgs),
    /// List what a lost region acknowledged after the cut, which this region never
    /// applied, with what to do about each record.
    Tail(TailArgs),
    /// Who writes each region's orders, as this region's database knows it.
    Status(StatusArgs),
    /// Move a taken-over region's frozen stock into this region's pool: counted units, or
    /// its last known available units less a margin (audited; running it again adds nothing).
    AdoptStock(AdoptStockArgs),
    /// Hand a taken-over region's orders back to it (run in the region that writes them
    /// now): drain, second cut, the home writes its orders again under a new epoch.
    Failback(crate::failback_cmd::FailbackArgs),
    /// Before this region's writers start: a region whose last run did not end with
    /// `region stop` starts fenced at its own brokers, until `region lift`.
    Start(crate::lifecycle_cmd::LifecycleArgs),
    /// After this region's writers stopped: its next start is a clean one.
    Stop(crate::lifecycle_cmd::LifecycleArgs),
    /// Lift the fence a start after an unclean stop put up, once no other region writes
    /// this region's orders (refused when one does: fail back instead).
    Lift(crate::lifecycle_cmd::LifecycleArgs),
    /// Stock transfers between the regions' pools, from each region's database: which were
    /// dispatched, which received, and the units in transit per SKU.
    Transfers(TransfersArgs),
}

impl RegionCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        let report = match self {
            RegionCommand::Takeover(args) => args.run().await?,
            RegionCommand::Fence(args) => args.run().await?,
            RegionCommand::Tail(args) => args.run().await?,
            RegionCommand::Status(args) => args.run().await?,
            RegionCommand::AdoptStock(args) => args.run().await?,
            RegionCommand::Failback(args) => args.run().await?,
            RegionCommand::Transfers(args) => args.run().await?,
            RegionCommand::Start(args) => args.start().await?,
            RegionCommand::Stop(args) => args.stop().await?,
            RegionCommand::Lift(args) => args.lift().await?,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(())
    }
}

/// The lost region: where its cluster and database are.
#[derive(Debug, Clone, Args)]
pub struct LostRegionArgs {
    /// The lost region's bootstrap servers (same client settings as this region's).
    #[arg(long = "lost-brokers", env = "ORDERFLOW_LOST_BROKERS")]
    pub lost_brokers: Option<String>,
    /// The lost region's database: the handover is recorded there too when it answers.
    #[arg(long = "lost-database-url", env = "ORDERFLOW_LOST_DATABASE_URL")]
    pub lost_database_url: Option<String>,
    /// Who loses Write on the lost region's topics at its brokers (repeat for several);
    /// everyone by default.
    #[arg(long = "fence-principal", default_value = fence::EVERYONE)]
    pub fence_principals: Vec<String>,
}

impl LostRegionArgs {
    fn kafka(&self) -> anyhow::Result<Option<infra::KafkaSettings>> {
        self.lost_brokers.as_ref().map(|brokers| KafkaArgs { brokers: brokers.clone() }.settings()).transpose()
    }
}

#[derive(Debug, Args)]
pub struct TakeoverArgs {
    /// The region declared lost.
    lost: Region,
    /// The region that takes its orders over: this one (`--region`).
    #[arg(long)]
    by: Region,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    lost_region: LostRegionArgs,
    /// How long to try the lost region's brokers for its fence before leaving it pending.
    #[arg(long, default_value = "10s", value_parser = crate::args::duration)]
    fence_within: humantime::Duration,
    /// Why, for the audit trail and the handover record.
    #[arg(long, default_value = "declared lost by an operator")]
    reason: String,
    /// The payment timeout this region's order process runs with (timers of the orders
    /// taken over are due at their confirmation plus this).
    #[arg(long, env = "ORDERFLOW_PAYMENT_TIMEOUT", default_value_t = ProcessSettings::PAYMENT_TIMEOUT.into(),
          value_parser = crate::args::duration)]
    payment_timeout: humantime::Duration,
    #[command(flatten)]
    schemas: SchemaRegistryArgs,
    #[command(flatten)]
    operator: OperatorArgs,
}

impl TakeoverArgs {
    async fn run(self) -> anyhow::Result<serde_json::Value> {
        let here = self.pipeline.database.region.region.clone().context(
            "a takeover runs in the region that takes over: give its name (--region / ORDERFLOW_REGION), brokers and database",
        )?;
        anyhow::ensure!(self.by == here, "--by {} must be this region (--region {here})", self.by);
        anyhow::ensure!(self.lost != here, "a region cannot take itself over");
        let store = self.pipeline.database.connect().await?;
        let arguments = serde_json::json!({"lost": self.lost.as_str(), "by": here.as_str(),
            "topic": self.pipeline.topic.topic, "reason": self.reason,
            "fence_principals": self.lost_region.fence_principals});
        let operator = self.operator.clone();
        let report = operator
            .audited(&store, "region takeover", arguments.clone(), self.take_over(&store, &here), |r| r.clone())
            .await?;
        if let Some(url) = &self.lost_region.lost_database_url {
            record_in_lost_region(url, &report, &operator, &arguments).await;
        }
        Ok(report)
    }

    async fn take_over(&self, store: &Store, here: &Region) -> anyhow::Result<serde_json::Value> {
        let started = Instant::now();
        let topic = &self.pipeline.topic.topic;
        let kafka = self.pipeline.kafka.checked_settings(Some(topic)).await?;
        let owners = store.operations().owners().await?;
        let (owner, epoch) = owners.owner_of(&self.lost);
        if owner == *here {
            anyhow::bail!(
                "region {} is already written by {here} (epoch {epoch}); `orderflow region fence {}` puts its fence up again",
                self.lost,
                self.lost
            );
        }
        anyhow::ensure!(
            owner == self.lost,
            "region {} was handed to {owner} (epoch {epoch}); only that region can hand it on",
            self.lost
        );
        // 1. Nothing more of the lost region's pipeline is copied in.
        let mirror = fence::put_up(&kafka, &mirror_fence(&self.lost, topic), Duration::from_secs(10))
            .await
            .context("fencing the copies of the lost region's topics at this region's brokers")?;
        // 2. The lost region's writers lose Write at its brokers, if they answer.
        let lost_fence = self.fence_lost_region(topic).await;
        // 3. The cut: where the copies end now.
        let copies: Vec<String> = schemas::pipeline_topics(topic).iter().map(|t| self.lost.mirrored(t)).collect();
        let (ends, records) = read_log(&kafka, copies).await?;
        let contract = self.schemas.contract().await?;
        contract.resolve(records.iter().filter_map(|r| r.payload.as_deref())).await?;
        let cut = cut_of(&self.lost, &ends, &records, |r| event_id_in(contract.codec(), r));
        let handover = Handover {
            region: self.lost.to_string(),
            owner: here.to_string(),
            epoch: epoch + 1,
            cut,
            at_ms: schemas::clock::now_ms(),
            decided_by: self.operator.name(),
            reason: self.reason.clone(),
            earlier_cuts: Vec::new(),
        };
        // 4. The lost region's orders, as its order process had them at the cut.
        let settings = ProcessSettings { payment_timeout: *self.payment_timeout, ..ProcessSettings::new(topic) };
        let (state, enqueue) = orders_at_cut(store, &self.lost, &records, contract.codec(), &settings);
        // Its checkout's memory, before this checkout writes its orders: who owns each order
        // (only the owner may cancel it) and the answers to its Idempotency-Keys (a retry
        // gets its first answer, never a second append).
        let (keys, owners) = checkout_rows_at_cut(&self.lost, &records, contract.codec(), topic);
        let keys_store = producers::idempotency::IdempotencyStore::connect(
            &self.pipeline.database.url.database_url,
            Duration::from_secs(10),
        )
        .await
        .context("connecting to this region's checkout key store")?;
        let (keys_written, owners_written) = keys_store.restore(&keys, &owners).await?;
        let adopted = store
            .operations()
            .take_over(&handover, &state, &enqueue, contract.codec(), &settings, &[])
            .await
            .context("installing the lost region's orders and the handover")?;
        // 5. On the log, for every region and every rebuild.
        append_handover(&kafka, topic, &handover).await?;
        Ok(serde_json::json!({
            "event": "taken_over", "region": handover.region, "owner": handover.owner, "epoch": handover.epoch,
            "cut": handover.cut, "orders_taken_over": adopted.orders, "enqueued": adopted.enqueued,
            "checkout_keys": keys_written, "order_owners": owners_written,
            "mirror_fenced": mirror.len(), "lost_region_fence": lost_fence,
            "seconds": started.elapsed().as_secs_f64(),
        }))
    }

    /// `"up"`, or why it is pending.
    async fn fence_lost_region(&self, topic: &str) -> String {
        let lost_kafka = match self.lost_region.kafka() {
            Ok(Some(kafka)) => kafka,
            Ok(None) => {
                return "pending: no --lost-brokers given; run `orderflow region fence` before restarting it".into()
            }
            Err(e) => return format!("pending: {e:#}"),
        };
        let fence = lost_region_fence(topic, &self.lost_region.fence_principals);
        match tokio::time::timeout(*self.fence_within, fence::put_up(&lost_kafka, &fence, *self.fence_within)).await {
            Ok(Ok(_)) => "up".into(),
            Ok(Err(e)) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "The lost region's brokers refused the fence. It is pending."
                );
                format!("pending: {}", infra::error_chain(&e))
            }
            Err(_) => {
                tracing::warn!("The lost region's brokers did not answer. Its fence is pending: run `orderflow region fence` before restarting anything of it.");
                format!("pending: its brokers did not answer within {}", self.fence_within)
            }
        }
    }
}

/// Records the handover and the action in the lost region's database, if it answers.
async fn record_in_lost_region(
    url: &str,
    report: &serde_json::Value,
    operator: &OperatorArgs,
    arguments: &serde_json::Value,
) {
    let attempt = async {
        let store = Store::connect(url).await?;
        let handover: Handover = serde_json::from_value(serde_json::json!({
            "region": report["region"], "owner": report["owner"], "epoch": report["epoch"], "cut": report["cut"],
            "at_ms": schemas::clock::now_ms(), "decided_by": operator.name(), "reason": arguments["reason"],
        }))
        .map_err(|e| projections::store::StoreError::Invalid(e.to_string()))?;
        store.operations().record_handover(&handover).await?;
        store
            .operations()
            .record_operator_action(&operator.name(), "region takeover", arguments, &format!("ok: {report}"))
            .await
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = &e as &dyn std::error::Error,
            "The lost region's database refused the handover record. Record it there before starting that region again."),
        Err(_) => tracing::warn!(
            "The lost region's database did not answer. Record the handover there before starting that region again."
        ),
    }
}

/// The ids of the events `records` carry (decoded; the header where a payload is not an
/// event of the contract).
async fn event_ids(
    contract: &infra::schema_registry::Contract,
    records: &[StoredRecord],
) -> anyhow::Result<BTreeSet<uuid::Uuid>> {
    contract.resolve(records.iter().filter_map(|r| r.payload.as_deref())).await?;
    Ok(records.iter().filter_map(|r| event_id_in(contract.codec(), r)).collect())
}

/// The cut, from where the copies end and their records.
fn cut_of(
    lost: &Region,
    ends: &BTreeMap<(String, i32), i64>,
    records: &[StoredRecord],
    id_of: impl Fn(&StoredRecord) -> Option<uuid::Uuid>,
) -> Vec<CutPoint> {
    let mut last: BTreeMap<(&str, i32), &StoredRecord> = BTreeMap::new();
    for record in records {
        last.insert((record.topic.as_str(), record.partition), record);
    }
    ends.iter()
        .map(|((copy, partition), end)| CutPoint {
            topic: lost.source_topic(copy).unwrap_or(copy).to_string(),
            partition: *partition,
            next_offset: *end,
            last_event_id: last.get(&(copy.as_str(), *partition)).and_then(|r| id_of(r)),
            in_region: None,
        })
        .collect()
}

/// The lost region's orders as its order process had them at the cut (recovered from the
/// copies as a rebuild would), and what goes out from here at once: the decisions it had
/// not published, and the reservations its stock group never decided (decided now on this
/// region's stock).
fn orders_at_cut(
    store: &Store,
    lost: &Region,
    records: &[StoredRecord],
    codec: &schemas::Codec,
    settings: &ProcessSettings,
) -> (recover::OrdersState, Vec<Event>) {
    let kind = ProcessKind::OrderProcess;
    let reads: BTreeSet<String> =
        GroupKind::from(kind).topics(&settings.orders_topic).iter().map(|t| lost.mirrored(t)).collect();
    let mut inputs = Vec::new();
    let mut published = Published::default();
    let mut requested = Vec::new();
    let mut decided: BTreeSet<(uuid::Uuid, String)> = BTreeSet::new();
    for record in records {
        if reads.contains(&record.topic) {
            let input = store.operations().decodable_input(
                kind,
                codec,
                &record.topic,
                record.key.as_deref(),
                record.payload.as_deref(),
            );
            if let Some(event) = input {
                let timestamp_ms = record.timestamp_ms.unwrap_or_default();
                inputs.push(LoggedInput { partition: record.partition, timestamp_ms, event });
            }
        }
        let role = TopicRole::by_name(&record.topic);
        if role == TopicRole::Orders {
            continue;
        }
        let Some(event) = record.payload.as_deref().and_then(|p| codec.decode(p).ok()) else { continue };
        if !role.trusts(event.kind()) {
            continue;
        }
        match &event {
            Event::StockRequested(r) if r.action == StockAction::Reserve => requested.push(event.clone()),
            Event::StockDecided(d) => {
                if let Some(order) = d.order_id {
                    decided.insert((order, d.sku.clone()));
                }
            }
            _ => {}
        }
        published.insert(event);
    }
    let state = recover::recover_orders(&recover::merge_by_time(inputs), &published, settings.payment_timeout);
    let mut enqueue = state.missing.clone();
    for request in requested {
        let Event::StockRequested(r) = &request else { continue };
        let waiting = state.flows.get(&r.order_id).is_some_and(|(flow, _)| !flow.status.is_decided());
        if waiting && !decided.contains(&(r.order_id, r.sku.clone())) {
            enqueue.push(request);
        }
    }
    (state, enqueue)
}

/// The checkout rows the lost region's appended records give back (as
/// `orderflow rebuild checkout-keys` would in that region), from the copies.
fn checkout_rows_at_cut(
    lost: &Region,
    records: &[StoredRecord],
    codec: &schemas::Codec,
    orders_topic: &str,
) -> (Vec<producers::idempotency::RestoredKey>, Vec<producers::idempotency::RestoredOwner>) {
    let (mut keys, mut owners) = (Vec::new(), Vec::new());
    for record in records.iter().filter(|r| TopicRole::by_name(&r.topic).written_by_callers()) {
        let Some(event) = record.payload.as_deref().and_then(|p| codec.decode(p).ok()) else { continue };
        let mut original = record.clone();
        original.topic = lost.source_topic(&record.topic).unwrap_or(&record.topic).to_string();
        let (key, owner) = producers::checkout::rebuild::rows_of(&original, &event, orders_topic, Some(lost));
        keys.extend(key);
        owners.extend(owner);
    }
    (keys, owners)
}

#[derive(Debug, Args)]
pub struct FenceArgs {
    /// The region taken over.
    lost: Region,
    #[command(flatten)]
    topic: crate::args::TopicArgs,
    #[command(flatten)]
    lost_region: LostRegionArgs,
    /// Keep trying its brokers this long (they may be starting).
    #[arg(long, default_value = "2m", value_parser = crate::args::duration)]
    wait: humantime::Duration,
}

impl FenceArgs {
    async fn run(self) -> anyhow::Result<serde_json::Value> {
        let kafka = self.lost_region.kafka()?.context("--lost-brokers: the brokers of the region to fence")?;
        let fence = lost_region_fence(&self.topic.topic, &self.lost_region.fence_principals);
        let deadline = Instant::now() + *self.wait;
        loop {
            match fence::put_up(&kafka, &fence, Duration::from_secs(5)).await {
                Ok(acls) => {
                    return Ok(serde_json::json!({"event": "fenced", "region": self.lost.as_str(),
                        "acls": acls.iter().map(ToString::to_string).collect::<Vec<_>>()}))
                }
                Err(e @ (infra::InfraError::Config(_) | infra::InfraError::Denied(_))) => return Err(e.into()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(anyhow::Error::new(e).context(format!("fencing {} within {}", self.lost, self.wait)))
                }
                Err(e) => {
                    tracing::info!(error = %infra::error_chain(&e), "The region's brokers do not answer yet. Trying again.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The region taken over.
    lost: Region,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    lost_region: LostRegionArgs,
    #[command(flatten)]
    schemas: SchemaRegistryArgs,
}

/// One record of the tail, and what to do about it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TailRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub kind: Option<String>,
    pub event_id: Option<uuid::Uuid>,
    pub order_id: Option<uuid::Uuid>,
    /// The new owner appended an event of the same id itself: a decision taken again (its
    /// ids are derived from its cause), not this record.
    pub decided_again: bool,
    pub resolution: &'static str,
}

/// What to do about an event of the tail, by its kind.
fn resolution(event: Option<&Event>) -> &'static str {
    match event {
        Some(Event::OrderPlaced(_)) => {
            "resubmit: the order never reached the region that took over; place it there again as a new order (POST /orders) or tell the customer"
        }
        Some(Event::PaymentCaptured(_) | Event::PaymentAuthorized(_)) => {
            "resubmit through the new owner (POST /orders/{id}/payments); if it has expired or cancelled the order, refund the payment"
        }
        Some(Event::PaymentFailed(_) | Event::PaymentRefunded(_) | Event::OrderCancelled(_)) => {
            "resubmit through the new owner (the same request)"
        }
        Some(Event::ShipmentPacked(_) | Event::ShipmentShipped(_) | Event::ShipmentDelivered(_)) => {
            "resubmit through the new owner (POST /orders/{id}/shipments): the parcel left"
        }
        Some(Event::StockAdjusted(_)) => "count it into the lost region's pool when its stock is taken over",
        Some(Event::StockTransferRequested(_)) => {
            "none: the lost region's pool kept the units (frozen with it); request the transfer again from a live pool"
        }
        Some(Event::StockTransferReceived(_)) => {
            "count the units into the new owner's pool: report the receipt there (POST /inventory/{sku}/transfer-receipts, same transfer id)"
        }
        Some(_) => "none: the lost region's processes decided it after the cut; the new owner decides again from its own log",
        None => "inspect: not an event of the contract",
    }
}

impl TailArgs {
    async fn run(self) -> anyhow::Result<serde_json::Value> {
        let topic = &self.pipeline.topic.topic;
        let store = self.pipeline.database.connect().await?;
        let owners = store.operations().owners().await?;
        let handover = owners
            .handover(&self.lost)
            .cloned()
            .with_context(|| format!("this region's database records no takeover of {}", self.lost))?;
        let kafka = self.pipeline.kafka.settings()?;
        let lost_kafka = self.lost_region.kafka()?.context("--lost-brokers: the brokers of the region taken over")?;
        let contract = self.schemas.contract().await?;
        let tail = tail_of(&kafka, &lost_kafka, &contract, topic, &self.lost, &handover).await?;
        let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
        for record in &tail {
            *by_kind.entry(record.kind.clone().unwrap_or_else(|| "undecodable".into())).or_default() += 1;
        }
        Ok(serde_json::json!({"event": "tail", "region": self.lost.as_str(), "epoch": handover.epoch,
            "records": tail.len(), "by_kind": by_kind, "tail": tail}))
    }
}

/// The records of `lost`'s own log that the copy held by the new owner did not have at
/// the cut: what `lost` acknowledged and nobody else ever applied.
pub async fn tail_of(
    kafka: &infra::KafkaSettings,
    lost_kafka: &infra::KafkaSettings,
    contract: &infra::schema_registry::Contract,
    orders_topic: &str,
    lost: &Region,
    handover: &Handover,
) -> anyhow::Result<Vec<TailRecord>> {
    let copies: Vec<String> = schemas::pipeline_topics(orders_topic).iter().map(|t| lost.mirrored(t)).collect();
    let cut: BTreeMap<(String, i32), i64> = handover
        .cut
        .iter()
        .map(|c| ((lost.mirrored(&c.topic), c.partition), c.next_offset))
        .filter(|((copy, _), _)| copies.contains(copy))
        .collect();
    let held = {
        let (kafka, cut) = (kafka.clone(), cut.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut records = Vec::new();
            log_reader::read_to(&kafka, &cut, STALL, |r| records.push(r))?;
            Ok(records)
        })
        .await??
    };
    let held = event_ids(contract, &held).await?;
    // What the new owner appended itself (decisions taken again carry the same ids).
    let (_, theirs) = read_log(kafka, schemas::pipeline_topics(orders_topic)).await?;
    let decided_again = event_ids(contract, &theirs).await?;
    let (_, own) = read_log(lost_kafka, schemas::pipeline_topics(orders_topic)).await?;
    contract.resolve(own.iter().filter_map(|r| r.payload.as_deref())).await?;
    let mut seen = BTreeSet::new();
    let mut tail = Vec::new();
    for record in &own {
        let event = record.payload.as_deref().and_then(|p| contract.codec().decode(p).ok());
        let event_id = event.as_ref().map(|e| e.envelope().event_id).or_else(|| event_id_of(record));
        if event_id.is_some_and(|id| held.contains(&id) || !seen.insert(id)) {
            continue;
        }
        tail.push(TailRecord {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            kind: event.as_ref().map(|e| format!("{:?}", e.kind())),
            event_id,
            order_id: event.as_ref().and_then(Event::order_id),
            decided_again: event_id.is_some_and(|id| decided_again.contains(&id)),
            resolution: match event_id {
                Some(id) if decided_again.contains(&id) => "none: the new owner decided it again, under the same id",
                _ => resolution(event.as_ref()),
            },
        });
    }
    Ok(tail)
}

#[derive(Debug, Args)]
pub struct TransfersArgs {
    /// A region's database, as `<region>=<url>` (repeat for every region).
    #[arg(long = "database-url", required = true, value_parser = region_database)]
    databases: Vec<(Region, String)>,
}

fn region_database(entry: &str) -> Result<(Region, String), String> {
    let (region, url) = entry.split_once('=').ok_or_else(|| format!("{entry:?} is not <region>=<database url>"))?;
    Ok((Region::parse(region).map_err(|e| e.to_string())?, url.to_string()))
}

impl TransfersArgs {
    async fn run(self) -> anyhow::Result<serde_json::Value> {
        let mut holds = Vec::new();
        for (region, url) in &self.databases {
            let store =
                Store::connect(url).await.with_context(|| format!("connecting to region {region}'s database"))?;
            for hold in store.reads().transfer_holds().await? {
                holds.push((region.to_string(), hold));
            }
        }
        let (transfers, in_transit) =
            projections::process::stock::transfers(holds.iter().map(|(region, hold)| (region.as_str(), hold)));
        Ok(serde_json::json!({"transfers": transfers, "in_transit": in_transit}))
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    database: crate::args::DatabaseArgs,
}

impl StatusArgs {
    async fn run(self) -> anyhow::Result<serde_json::Value> {
        let store = self.database.connect().await?;
        let owners = store.operations().owners().await?;
        Ok(serde_json::json!({"handovers": handovers_of(&owners)}))
    }
}

fn handovers_of(owners: &Owners) -> Vec<serde_json::Value> {
    owners
        .all()
        .map(|h| {
            serde_json::json!({"region": h.region, "owner": h.owner, "epoch": h.epoch,
        "at_ms": h.at_ms, "decided_by": h.decided_by, "reason": h.reason})
        })
        .collect()
}

/// Follows the handovers recorded in this region's database, for a checkout: a takeover
/// is routed by from the next look (every `every`). A database without the table (a
/// checkout with a database of its own) follows none, and says so once.
pub fn follow_handovers(store: Store, every: Duration) -> tokio::sync::watch::Receiver<Owners> {
    let (send, receive) = tokio::sync::watch::channel(Owners::default());
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            match store.operations().owners().await {
                Ok(owners) => {
                    send.send_if_modified(|known| {
                        let changed = *known != owners;
                        if changed {
                            tracing::info!(handovers = ?handovers_of(&owners), "Following new region handovers.");
                            *known = owners;
                        }
                        changed
                    });
                }
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(error = &e as &dyn std::error::Error,
                        "Cannot read region handovers from the database. Requests are routed as if no region was taken over.");
                }
                Err(_) => {}
            }
            if send.is_closed() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    receive
}

#[derive(Debug, Args)]
pub struct AdoptStockArgs {
    /// The region taken over, whose pool is frozen.
    lost: Region,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Units counted in the lost region's warehouses, `<SKU>=<units>` (repeat, or comma
    /// separate): each SKU named is adopted with exactly this count.
    #[arg(long = "count", value_delimiter = ',', value_parser = parse_count)]
    counts: Vec<(String, i32)>,
    /// Or adopt every SKU of the frozen pool at its last known available units less this
    /// margin, in percent (the units the lost region may have sold in its tail).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100), conflicts_with = "counts")]
    margin: Option<u8>,
    /// The warehouse the adopted units are booked to in this region's pool.
    #[arg(long, default_value = "adopted")]
    warehouse: String,
    #[command(flatten)]
    schemas: SchemaRegistryArgs,
    #[command(flatten)]
    operator: OperatorArgs,
}

fn parse_count(raw: &str) -> Result<(String, i32), String> {
    let (sku, units) = raw.split_once('=').ok_or_else(|| format!("{raw:?}: expected <SKU>=<units>"))?;
    let units: i32 = units.trim().parse().map_err(|_| format!("{raw:?}: units must be a whole number"))?;
    if sku.trim().is_empty() || units < 0 {
        return Err(format!("{raw:?}: a SKU and zero or more units"));
    }
    Ok((sku.trim().to_string(), units))
}

/// The units to adopt per SKU: the counts given, or the frozen pool's available units less
/// `margin` percent (rounded down).
pub fn units_to_adopt(
    frozen: &[projections::store::InventoryLevel],
    counts: &[(String, i32)],
    margin: Option<u8>,
) -> Vec<(String, i32)> {
    match margin {
        Some(margin) => frozen
            .iter()
            .map(|level| {
                let kept = level.available.max(0) * i64::from(100 - margin) / 100;
                (level.sku.clone(), i32::try_from(kept).unwrap_or(i32::MAX))
            })
            .filter(|(_, units)| *units > 0)
            .collect(),
        None => counts.iter().filter(|(_, units)| *units > 0).cloned().collect(),
    }
}

impl AdoptStockArgs {
    async fn run(self) -> anyhow::Result<serde_json::Value> {
        let here = self.pipeline.database.region.region.clone().context("--region: the region that took over")?;
        anyhow::ensure!(
            !self.counts.is_empty() || self.margin.is_some(),
            "say how many units to adopt: --count <SKU>=<units> (counted), or --margin <percent>"
        );
        let store = self.pipeline.database.connect().await?;
        let arguments = serde_json::json!({"lost": self.lost.as_str(), "counts": self.counts, "margin": self.margin,
            "warehouse": self.warehouse});
        let operator = self.operator.clone();
        operator.audited(&store, "region adopt-stock", arguments, self.adopt(&store, &here), |r| r.clone()).await
    }

    async fn adopt(&self, store: &Store, here: &Region) -> anyhow::Result<serde_json::Value> {
        let owners = store.operations().owners().await?;
        let handover = owners
            .handover(&self.lost)
            .filter(|h| h.owner == here.as_str())
            .cloned()
            .with_context(|| format!("{here} has not taken {} over: its stock is not frozen here", self.lost))?;
        let frozen: Vec<_> = store
            .reads()
            .inventory_levels()
            .await?
            .into_iter()
            .filter(|level| level.region.as_deref() == Some(self.lost.as_str()))
            .collect();
        let units = units_to_adopt(&frozen, &self.counts, self.margin);
        let kafka = self.pipeline.kafka.checked_settings(Some(&self.pipeline.topic.topic)).await?;
        let contract = self.schemas.contract().await?;
        let publisher = producers::publisher::Publisher::new(
            &kafka,
            producers::publisher::PublisherConfig {
                topic: self.pipeline.topic.topic.clone(),
                deadline: Duration::from_secs(30),
                linger_ms: 0,
                codec: contract.codec().clone(),
            },
        )?;
        // One id per handover and SKU: adopting again appends the same event, which the
        // stock group applies once.
        let namespace = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("adopt {handover:?}").as_bytes());
        let principal = format!("operator:{}", self.operator.name());
        let mut adopted = BTreeMap::new();
        for (sku, delta) in &units {
            let event_id = uuid::Uuid::new_v5(&namespace, sku.as_bytes());
            let event = Event::StockAdjusted(schemas::StockAdjusted {
                envelope: schemas::Envelope {
                    event_id,
                    occurred_at: schemas::Envelope::now(),
                    correlation_id: event_id,
                    causation_id: None,
                },
                sku: sku.clone(),
                warehouse: self.warehouse.clone(),
                delta: *delta,
                reason: schemas::AdjustmentReason::Counted,
            });
            publisher.publish(&event, &principal).await.with_context(|| format!("adopting {sku}"))?;
            adopted.insert(sku.clone(), *delta);
        }
        let frozen: BTreeMap<&str, i64> = frozen.iter().map(|l| (l.sku.as_str(), l.available)).collect();
        Ok(serde_json::json!({"event": "stock_adopted", "region": self.lost.as_str(), "into": here.as_str(),
            "epoch": handover.epoch, "frozen_available": frozen, "adopted": adopted}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(sku: &str, available: i64) -> projections::store::InventoryLevel {
        projections::store::InventoryLevel {
            sku: sku.into(),
            on_hand: available + 5,
            reserved: 5,
            shipped: 0,
            available,
            region: Some("eu".into()),
        }
    }

    #[test]
    fn a_margin_adopts_the_frozen_available_units_less_the_margin_and_counts_adopt_exactly() {
        let frozen = [level("A", 100), level("B", 9), level("C", 0), level("D", -3)];
        assert_eq!(units_to_adopt(&frozen, &[], Some(10)), vec![("A".to_string(), 90), ("B".to_string(), 8)]);
        assert_eq!(units_to_adopt(&frozen, &[], Some(100)), vec![]);
        let counts = [("A".to_string(), 42), ("Z".to_string(), 0)];
        assert_eq!(units_to_adopt(&frozen, &counts, None), vec![("A".to_string(), 42)]);
        assert_eq!(parse_count("SKU-1=7"), Ok(("SKU-1".to_string(), 7)));
        assert!(parse_count("SKU-1").is_err() && parse_count("=3").is_err() && parse_count("A=-1").is_err());
    }
}
