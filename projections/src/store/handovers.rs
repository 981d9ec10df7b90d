//! Who writes each region's orders, as this region's database knows it
//! (`region_handovers`), and how a batch applies the rules of [`schemas::Owners`]: an
//! event of a taken-over region's order is applied, refused (the late tail, a record under
//! the wrong epoch), or held back until the copy before the cut is applied.
use std::collections::{BTreeMap, HashMap};

use schemas::{Admit, Event, Handover, Owners, Region};
use sqlx::Row;

use super::connection::Dialect;
use super::error::StoreError;
use super::records::LogRecord;
use super::roles::Operations;
use super::sql::{Exec, Sql};
use crate::registry;

/// Every handover recorded in this database.
pub(super) async fn owners<C: Exec>(conn: &mut C) -> Result<Owners, StoreError> {
    let rows = Sql::new("SELECT handover FROM region_handovers").rows(conn).await?;
    let mut owners = Owners::default();
    for row in rows {
        let text: String = row.try_get("handover")?;
        let handover: Handover = serde_json::from_str(&text)
            .map_err(|e| StoreError::Invalid(format!("a row of region_handovers is no handover: {e}")))?;
        owners.insert(handover);
    }
    for row in Sql::new("SELECT region FROM region_drains").rows(conn).await? {
        owners.set_draining(&row.try_get::<String, _>("region")?);
    }
    Ok(owners)
}

/// Writes a handover's row (a second one of the same region and epoch changes nothing);
/// the rows written.
pub(super) async fn insert_handover<C: Exec>(conn: &mut C, handover: &Handover) -> Result<u64, StoreError> {
    let text = serde_json::to_string(handover)
        .map_err(|e| StoreError::Invalid(format!("a handover that cannot be written: {e}")))?;
    let mut q = Sql::new("INSERT INTO region_handovers (region, epoch, owner, handover, recorded_at_ms) VALUES (");
    q.bind(handover.region.clone())
        .push(", ")
        .bind(i64::from(handover.epoch))
        .push(", ")
        .bind(handover.owner.clone())
        .push(", ")
        .bind(text)
        .push(", ")
        .bind(schemas::clock::now_ms())
        .push(") ON CONFLICT (region, epoch) DO NOTHING");
    Ok(q.execute(conn).await?)
}

/// Ends `region`'s drain, if it drains.
pub(super) async fn end_drain<C: Exec>(conn: &mut C, region: &str) -> Result<(), StoreError> {
    let mut q = Sql::new("DELETE FROM region_drains WHERE region = ");
    q.bind(region.to_string());
    q.execute(conn).await?;
    Ok(())
}

impl Operations {
    /// Records a handover (recording it again changes nothing). Whoever reads batches,
    /// routes requests or relays decisions in this region follows it from their next step.
    #[tracing::instrument(skip_all, fields(region = %handover.region, owner = %handover.owner, epoch = handover.epoch))]
    pub async fn record_handover(&self, handover: &Handover) -> Result<bool, StoreError> {
        let mut conn = self.store.pool.acquire().await?;
        Ok(insert_handover(&mut *conn, handover).await? > 0)
    }

    /// Starts draining `region`'s orders: checkouts following this database answer writes
    /// about them with 503 until the handover that ends the drain is recorded.
    #[tracing::instrument(skip(self))]
    pub async fn start_drain(&self, region: &Region, decided_by: &str) -> Result<(), StoreError> {
        let mut q = Sql::new("INSERT INTO region_drains (region, since_ms, decided_by) VALUES (");
        q.bind(region.to_string())
            .push(", ")
            .bind(schemas::clock::now_ms())
            .push(", ")
            .bind(decided_by.to_string())
            .push(") ON CONFLICT (region) DO NOTHING");
        let mut conn = self.store.pool.acquire().await?;
        q.execute(&mut *conn).await?;
        Ok(())
    }

    /// Ends a drain without a handover (a failback given up).
    pub async fn end_drain(&self, region: &Region) -> Result<(), StoreError> {
        let mut conn = self.store.pool.acquire().await?;
        end_drain(&mut *conn, region.as_str()).await
    }

    /// How this region's last run ended, as `orderflow region start|stop|lift` recorded it
    /// (`running`, `stopped`, `fenced`), and since when; `None` before its first start.
    pub async fn region_run(&self, region: &Region) -> Result<Option<(String, i64)>, StoreError> {
        let mut q = Sql::new("SELECT state, since_ms FROM region_runs WHERE region = ");
        q.bind(region.to_string());
        let mut conn = self.store.pool.acquire().await?;
        let rows = q.rows(&mut *conn).await?;
        rows.first().map(|row| Ok((row.try_get("state")?, row.try_get("since_ms")?))).transpose()
    }

    pub async fn set_region_run(&self, region: &Region, state: &str) -> Result<(), StoreError> {
        let mut q = Sql::new("INSERT INTO region_runs (region, state, since_ms) VALUES (");
        q.bind(region.to_string())
            .push(", ")
            .bind(state.to_string())
            .push(", ")
            .bind(schemas::clock::now_ms())
            .push(") ON CONFLICT (region) DO UPDATE SET state = excluded.state, since_ms = excluded.since_ms");
        let mut conn = self.store.pool.acquire().await?;
        q.execute(&mut *conn).await?;
        Ok(())
    }

    /// The handovers this database knows.
    pub async fn owners(&self) -> Result<Owners, StoreError> {
        let mut conn = self.store.pool.acquire().await?;
        owners(&mut *conn).await
    }

    /// Where `group` stands on each partition of `topic` (its stored next offsets).
    pub async fn applied_to(&self, group: &str, topic: &str) -> Result<BTreeMap<i32, i64>, StoreError> {
        let mut conn = self.store.pool.acquire().await?;
        let rows =
            super::offsets::read(&mut *conn, self.store.dialect, group, topic, None, super::offsets::Lock::No).await?;
        Ok(rows.into_iter().collect())
    }
}

/// What a batch does with one event, once ownership is looked at.
pub(super) enum Verdict {
    Apply,
    Refuse(String),
    /// Not yet: its partition stops here for this batch.
    Hold,
}

/// The rules one batch applies: this region, whose log the batch is, the handovers, and
/// how far this group's copy groups are.
pub(super) struct Admission {
    here: Option<Region>,
    log_region: Option<Region>,
    /// The batch's topic as the region that writes it names it (a copy's prefix cut off).
    topic: String,
    owners: Owners,
    /// (topic as read here, partition) → the next offset this group's reader of it applies.
    applied: HashMap<(String, i32), i64>,
    /// A process group: it reads no copy; the takeover installed its state up to the cut
    /// before the handover was recorded.
    adopted_at_handover: bool,
}

impl Admission {
    /// With one region (no region configured) every event is applied, as before regions.
    pub(super) async fn load<C: Exec>(
        conn: &mut C,
        here: Option<&str>,
        group: &str,
        batch_topic: &str,
        log_region: &str,
        partitions: impl Iterator<Item = i32>,
    ) -> Result<Admission, StoreError> {
        let here = here.and_then(|r| Region::parse(r).ok());
        let log_region = Region::parse(log_region).ok();
        let topic = match &log_region {
            Some(region) => region.source_topic(batch_topic).unwrap_or(batch_topic).to_string(),
            None => batch_topic.to_string(),
        };
        let mut admission = Admission {
            here,
            log_region,
            topic,
            owners: Owners::default(),
            applied: HashMap::new(),
            adopted_at_handover: registry::is_process_group(group),
        };
        let Some(here) = admission.here.clone() else { return Ok(admission) };
        admission.owners = owners(conn).await?;
        // Where this group stands on every log a record may be told to wait for: this
        // region's own topic and its copies of the other regions' (the groups whose
        // tables this one writes).
        let partitions: Vec<i32> = partitions.collect();
        if !admission.owners.is_empty() && !admission.adopted_at_handover {
            let own = registry::generation_group(group).to_string();
            let mut logs = vec![(own.clone(), admission.topic.clone())];
            for region in admission.owners.regions_involved().into_iter().filter(|r| *r != here) {
                logs.push((registry::mirror_group(&own, &region), region.mirrored(&admission.topic)));
            }
            let dialect = if conn.is_postgres() { Dialect::Postgres } else { Dialect::Sqlite };
            for (reader, topic) in logs {
                let rows =
                    super::offsets::read(conn, dialect, &reader, &topic, Some(&partitions), super::offsets::Lock::No)
                        .await?;
                for (partition, next) in rows {
                    admission.applied.insert((topic.clone(), partition), next);
                }
            }
        }
        Ok(admission)
    }

    pub(super) fn verdict(&self, record: &LogRecord, event: &Event) -> Verdict {
        let Some(log_region) = &self.log_region else { return Verdict::Apply };
        // A store serving no region named reads as the region whose log it reads.
        let here = self.here.as_ref().unwrap_or(log_region);
        let Some(home) = event.order_id().and_then(|id| Region::home_of(&id)) else { return Verdict::Apply };
        match self.owners.admit(here, &home, log_region, &self.topic, record.partition, record.offset, record.epoch) {
            Admit::Apply => Verdict::Apply,
            Admit::Refuse(reason) => Verdict::Refuse(reason),
            Admit::After { topic, partition, offset } => {
                let applied = self.applied.get(&(topic, partition)).copied().unwrap_or(0);
                if self.adopted_at_handover || applied >= offset {
                    Verdict::Apply
                } else {
                    Verdict::Hold
                }
            }
        }
    }
}
