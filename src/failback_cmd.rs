//! `orderflow region failback <home> --by <here>`: a region taken over takes its orders
//! back. Run by the operator of the region that writes them now (`here`), with the home's
//! brokers and database:
//!
//! 1. **Drain.** Both databases get a drain row; every checkout following them answers
//!    writes about the home's orders with `503 region_draining` and Retry-After. After a
//!    settling time (the checkouts follow their database every second, and a publish in
//!    flight ends within its deadline), nothing more is appended for them by request.
//! 2. **Quiet.** This region's order process, stock group and relay finish what the last
//!    requests started (order → stock request → stock decision → confirmation): rounds of
//!    "every process group at the log ends, the outbox empty".
//! 3. **The second cut.** Where this region's log ends, per partition, in its own offsets
//!    and in the home's copy of it (found there by event id: MirrorMaker 2 must have copied
//!    it); and the takeover's cut in the home's own offsets (by event id too: the home's log
//!    is readable again), so the home's readers can refuse their own late tail.
//! 4. **Hand back.** The home's fence is lifted; its database gets the orders as this
//!    region's order process has them (its own late tail's orders dropped), the handover
//!    (epoch + 1) and the end of its drain, in one transaction; then this database forgets
//!    the orders, records the handover and ends its drain, in one transaction. The home
//!    writes its orders again under the new epoch; each reader applies them after the
//!    previous owner's log up to the cut (`schemas::Owners::admit`).
//! 5. The mirror fence on this region's copies of the home's log is lifted and the
//!    handover appended to both control topics. MirrorMaker 2's task copying the home's
//!    log here stopped at the fence: the operator restarts it.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use infra::fence;
use infra::log_reader::StoredRecord;
use projections::registry::{GroupKind, ProcessKind};
use projections::store::{ProcessSettings, Store};
use schemas::{CutPoint, EarlierCut, Handover, Region};

use crate::args::{KafkaArgs, OperatorArgs, PipelineArgs, SchemaRegistryArgs};
use crate::recover_cmd::read_log;
use crate::region_io::{append_handover, event_id_in, lost_region_fence, mirror_fence};

/// Rounds of "process groups at the log ends, outbox empty": one per step of the longest
/// chain a request starts (order, stock request, stock decision, confirmation).
const QUIET_ROUNDS: usize = 4;

#[derive(Debug, Args)]
pub struct FailbackArgs {
    /// The region taking its orders back.
    home: Region,
    /// The region that writes them now: this one (`--region`).
    #[arg(long)]
    by: Region,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// The home region's bootstrap servers (same client settings as this region's).
    #[arg(long = "home-brokers", env = "ORDERFLOW_HOME_BROKERS")]
    home_brokers: String,
    /// The home region's database.
    #[arg(long = "home-database-url", env = "ORDERFLOW_HOME_DATABASE_URL")]
    home_database_url: String,
    /// The principals the takeover fenced at the home's brokers (repeat for several).
    #[arg(long = "fence-principal", default_value = fence::EVERYONE)]
    fence_principals: Vec<String>,
    /// How long checkouts get to see the drain and finish appends in flight.
    #[arg(long, default_value = "8s", value_parser = crate::args::duration)]
    drain_settle: humantime::Duration,
    /// How long to wait for this region's processes to go quiet, and for the home's copy
    /// of this region's log to hold the cut.
    #[arg(long, default_value = "2m", value_parser = crate::args::duration)]
    within: humantime::Duration,
    /// Why, for the audit trail and the handover record.
    #[arg(long, default_value = "failback decided by an operator")]
    reason: String,
    #[command(flatten)]
    schemas: SchemaRegistryArgs,
    #[command(flatten)]
    operator: OperatorArgs,
}

impl FailbackArgs {
    pub async fn run(self) -> anyhow::Result<serde_json::Value> {
        let here = self.pipeline.database.region.region.clone().context(
            "a failback runs in the region that writes the home's orders now: give its name (--region / ORDERFLOW_REGION)",
        )?;
        anyhow::ensure!(self.by == here, "--by {} must be this region (--region {here})", self.by);
        anyhow::ensure!(self.home != here, "a region cannot fail back to itself");
        let store = self.pipeline.database.connect().await?;
        let home_store = Store::connect(&self.home_database_url)
            .await
            .context("connecting to the home region's database")?
            .with_region(Some(&self.home));
        let arguments = serde_json::json!({"home": self.home.as_str(), "by": here.as_str(),
            "topic": self.pipeline.topic.topic, "reason": self.reason});
        let report = self
            .operator
            .audited(&store, "region failback", arguments.clone(), self.fail_back(&store, &home_store, &here), |r| {
                r.clone()
            })
            .await?;
        if let Err(e) = home_store
            .operations()
            .record_operator_action(&self.operator.name(), "region failback", &arguments, &format!("ok: {report}"))
            .await
        {
            tracing::warn!(error = &e as &dyn std::error::Error, "The home region's audit trail refused the record.");
        }
        Ok(report)
    }

    async fn fail_back(&self, store: &Store, home_store: &Store, here: &Region) -> anyhow::Result<serde_json::Value> {
        let started = Instant::now();
        let topic = &self.pipeline.topic.topic;
        let kafka = self.pipeline.kafka.settings()?;
        let home_kafka = KafkaArgs { brokers: self.home_brokers.clone() }.settings()?;
        let owners = store.operations().owners().await?;
        let taken = owners
            .handover(&self.home)
            .filter(|h| h.owner == here.as_str())
            .with_context(|| format!("region {here} does not write region {}'s orders (no such handover)", self.home))?
            .clone();

        // 1. Drain, in both regions.
        let operator = self.operator.name();
        store.operations().start_drain(&self.home, &operator).await?;
        home_store.operations().start_drain(&self.home, &operator).await?;
        let drained = async {
            tokio::time::sleep(*self.drain_settle).await;
            // 2. Quiet.
            self.wait_quiet(store, &kafka).await?;
            // 3. The cut: this region's log as it is now, and in the home's copy.
            let contract = self.schemas.contract().await?;
            let (ends, records) = read_log(&kafka, schemas::pipeline_topics(topic)).await?;
            contract.resolve(records.iter().filter_map(|r| r.payload.as_deref())).await?;
            let ours = last_ids(&ends, &records, |r| event_id_in(contract.codec(), r));
            let in_home_copy = self.find_in_home(&home_kafka, &contract, &ours, |t| here.mirrored(t)).await?;
            // The takeover's cut in the home's own offsets.
            let previous_is_home = taken.epoch == 2 || owners_writer_is_home(&owners, &self.home, taken.epoch - 1);
            let earlier = if previous_is_home {
                let wanted: BTreeMap<(String, i32), (i64, Option<uuid::Uuid>)> = taken
                    .cut
                    .iter()
                    .filter(|c| c.in_region.as_deref().is_none_or(|r| r == taken.owner))
                    .map(|c| ((c.topic.clone(), c.partition), (c.next_offset, c.last_event_id)))
                    .collect();
                self.find_in_home(&home_kafka, &contract, &wanted, |t| t.to_string()).await?
            } else {
                Vec::new()
            };
            anyhow::Ok((ours, in_home_copy, earlier, contract))
        }
        .await;
        let (ours, in_home_copy, earlier, contract) = match drained {
            Ok(done) => done,
            Err(e) => {
                // Given up: writes about the home's orders go on here.
                let _ = store.operations().end_drain(&self.home).await;
                let _ = home_store.operations().end_drain(&self.home).await;
                return Err(e.context("the failback was given up; the drain is ended"));
            }
        };
        let mut cut: Vec<CutPoint> = ours
            .iter()
            .map(|((t, p), (end, id))| CutPoint {
                topic: t.clone(),
                partition: *p,
                next_offset: *end,
                last_event_id: *id,
                in_region: Some(here.to_string()),
            })
            .collect();
        cut.extend(in_home_copy.into_iter().map(|c| CutPoint { in_region: Some(self.home.to_string()), ..c }));
        let handover = Handover {
            region: self.home.to_string(),
            owner: self.home.to_string(),
            epoch: taken.epoch + 1,
            cut,
            at_ms: schemas::clock::now_ms(),
            decided_by: operator.clone(),
            reason: self.reason.clone(),
            earlier_cuts: earlier
                .into_iter()
                .map(|point| EarlierCut {
                    epoch: taken.epoch,
                    point: CutPoint { in_region: Some(self.home.to_string()), ..point },
                })
                .collect(),
        };

        // 4. Hand back: the home first, so it writes its orders once this region stops.
        let fence = lost_region_fence(topic, &self.fence_principals);
        fence::take_down(&home_kafka, &fence, Duration::from_secs(30))
            .await
            .context("lifting the home region's fence at its brokers")?;
        // Whatever its last start found, the home runs again (`region start|lift`).
        home_store.operations().set_region_run(&self.home, "running").await?;
        let orders = store.operations().orders_of_region(&self.home).await?;
        let had = home_store.operations().orders_of_region(&self.home).await?;
        let dropped: Vec<uuid::Uuid> = had.flows.keys().filter(|id| !orders.flows.contains_key(id)).copied().collect();
        let settings = ProcessSettings::new(topic);
        home_store
            .operations()
            .take_over(&handover, &orders, &[], contract.codec(), &settings, &dropped)
            .await
            .context("installing the orders and the handover in the home region's database")?;
        let ids: Vec<uuid::Uuid> = orders.flows.keys().copied().collect();
        store.operations().release_region(&handover, &ids).await?;

        // 5. Mirrors and control topics.
        fence::take_down(&kafka, &mirror_fence(&self.home, topic), Duration::from_secs(30))
            .await
            .context("lifting the mirror fence on this region's copies of the home's log")?;
        append_handover(&kafka, topic, &handover).await?;
        append_handover(&home_kafka, topic, &handover).await?;
        Ok(serde_json::json!({
            "event": "failed_back", "region": handover.region, "owner": handover.owner, "epoch": handover.epoch,
            "cut": handover.cut, "earlier_cuts": handover.earlier_cuts,
            "orders_handed_back": ids.len(), "orders_dropped": dropped.len(),
            "seconds": started.elapsed().as_secs_f64(),
            "next": [
                format!("restart MirrorMaker 2's {}->{here} flow: its task stopped at the mirror fence", self.home),
                format!("rebuild region {}'s projections (`orderflow rebuild <projection>` there): its readers applied its late tail before the takeover", self.home),
            ],
        }))
    }

    /// Rounds of: every process group of this region at the log ends taken at the round's
    /// start, then the outbox empty.
    async fn wait_quiet(&self, store: &Store, kafka: &infra::KafkaSettings) -> anyhow::Result<()> {
        let topic = &self.pipeline.topic.topic;
        let deadline = Instant::now() + *self.within;
        let groups: Vec<(String, String)> = ProcessKind::ALL
            .into_iter()
            .flat_map(|kind| crate::kit::reading(GroupKind::from(kind), &store.group(kind), topic))
            .collect();
        for _ in 0..QUIET_ROUNDS {
            for (group, group_topic) in &groups {
                let ends = crate::kit::log_ends(kafka, group_topic).await?;
                let left = deadline.saturating_duration_since(Instant::now());
                let caught_up =
                    crate::kit::wait_caught_up(store, group, group_topic, &ends, left, Duration::from_millis(50))
                        .await?;
                anyhow::ensure!(caught_up, "{group} did not catch up with {group_topic} within {}", self.within);
            }
            while store.reads().outbox_len().await? > 0 {
                anyhow::ensure!(Instant::now() < deadline, "the outbox was not emptied within {}", self.within);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Where each `(topic, partition)` of `wanted` (the offset after a record, and its
    /// event id) lies in the home's cluster, in the topic `named` gives: found by event id,
    /// waiting for MirrorMaker 2 where it has not copied it yet.
    async fn find_in_home(
        &self,
        home_kafka: &infra::KafkaSettings,
        contract: &infra::schema_registry::Contract,
        wanted: &BTreeMap<(String, i32), (i64, Option<uuid::Uuid>)>,
        named: impl Fn(&str) -> String,
    ) -> anyhow::Result<Vec<CutPoint>> {
        let deadline = Instant::now() + *self.within;
        let topics: BTreeSet<String> = wanted.keys().map(|(t, _)| named(t)).collect();
        loop {
            let (_, records) = read_log(home_kafka, topics.iter().cloned().collect()).await?;
            contract.resolve(records.iter().filter_map(|r| r.payload.as_deref())).await?;
            let mut found = BTreeMap::new();
            for record in &records {
                if let Some(id) = event_id_in(contract.codec(), record) {
                    found.entry((record.topic.clone(), record.partition, id)).or_insert(record.offset);
                }
            }
            let mut points = Vec::new();
            let mut missing = Vec::new();
            for ((topic, partition), (next, id)) in wanted {
                let at = match id {
                    _ if *next == 0 => Some(0),
                    Some(id) => found.get(&(named(topic), *partition, *id)).map(|offset| offset + 1),
                    None => None,
                };
                match at {
                    Some(next_offset) => points.push(CutPoint {
                        topic: topic.clone(),
                        partition: *partition,
                        next_offset,
                        last_event_id: *id,
                        in_region: None,
                    }),
                    None => missing.push(format!("{}:{partition}", named(topic))),
                }
            }
            if missing.is_empty() {
                return Ok(points);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "region {}'s cluster does not hold the cut's last records in {} within {}",
                self.home,
                missing.join(", "),
                self.within
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Whether `home` itself wrote its orders under `epoch`.
fn owners_writer_is_home(owners: &schemas::Owners, home: &Region, epoch: u32) -> bool {
    epoch == 1 || owners.handover_of(home, epoch).is_some_and(|h| h.owner == home.as_str())
}

/// Per partition of each topic read: the offset after its last record that carries an
/// event id (what another cluster's copy can be searched for), and that id; 0 and none
/// where no record has one.
fn last_ids(
    ends: &BTreeMap<(String, i32), i64>,
    records: &[StoredRecord],
    id_of: impl Fn(&StoredRecord) -> Option<uuid::Uuid>,
) -> BTreeMap<(String, i32), (i64, Option<uuid::Uuid>)> {
    let mut last: BTreeMap<(String, i32), (i64, Option<uuid::Uuid>)> =
        ends.keys().map(|key| (key.clone(), (0, None))).collect();
    for record in records {
        if let Some(id) = id_of(record) {
            last.insert((record.topic.clone(), record.partition), (record.offset + 1, Some(id)));
        }
    }
    last
}
