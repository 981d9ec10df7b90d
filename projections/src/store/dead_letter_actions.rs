//! Operator actions on parked records: skip (give up on a record, unblocking its order)
//! and retry (apply an order's parked records now, in log order).
use std::collections::{BTreeMap, HashMap};

use schemas::Codec;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use super::batch::{load_states, lock_offsets, write_sku_deltas, write_states, StoredProjection};
use super::rows::StoredState;
use super::schema::table_name;
use super::{Store, StoreError};
use crate::model::{LogPosition, SkuDelta};

/// Which dead letters an action is about.
#[derive(Debug, Clone)]
pub enum DeadLetterSelection {
    Ids(Vec<i64>),
    /// Every parked record of one order.
    Order(Uuid),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetryOutcome {
    /// Dead letters whose record is now applied.
    pub applied: Vec<i64>,
    /// Dead letters still parked, with the reason they failed again.
    pub still_parked: Vec<(i64, String)>,
}

struct Parked {
    id: i64,
    topic: String,
    partition: i32,
    offset: i64,
    order_id: Option<Uuid>,
    payload: Option<Vec<u8>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Which projection a group builds, if the database knows it.
    pub async fn projection_of_group(&self, group: &str) -> Result<Option<String>, StoreError> {
        let registered: Option<String> = sqlx::query("SELECT projection FROM projection_groups WHERE group_id = $1")
            .bind(group)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get("projection"))
            .transpose()?;
        Ok(registered.or_else(|| {
            super::schema::PROJECTIONS.iter().find(|p| self.first_group(p) == group).map(|p| p.to_string())
        }))
    }

    /// Marks parked records as skipped: they will never be applied, and their order's
    /// later records are no longer held back by them. Returns the ids it skipped.
    #[tracing::instrument(skip(self))]
    pub async fn skip_dead_letters(
        &self,
        group: &str,
        selection: &DeadLetterSelection,
    ) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let parked = select_parked(&mut tx, group, selection).await?;
        let ids: Vec<i64> = parked.iter().map(|p| p.id).collect();
        for id in &ids {
            sqlx::query("UPDATE dead_letters SET status = 'skipped', resolved_at_ms = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(*id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Applies parked records again, for after their cause was fixed (a newer binary that
    /// reads them, a skipped record that blocked them). Retrying any record of an order
    /// retries all of that order's parked records in log order, stopping at the first that
    /// is rejected again, so nothing is applied out of order. Runs in one transaction that
    /// holds the group's offset rows of the partitions involved, so no member applies a
    /// batch of those partitions meanwhile.
    #[tracing::instrument(skip(self, codec))]
    pub async fn retry_dead_letters<P: StoredProjection>(
        &self,
        group: &str,
        selection: &DeadLetterSelection,
        codec: &Codec,
    ) -> Result<RetryOutcome, StoreError> {
        let generation = self.generation_of(group).await?;
        let state_table = table_name(<P::State as StoredState>::TABLE, generation);
        let sku_table = table_name("inventory_sku", generation);
        let mut tx = self.begin_write().await?;
        let conn: &mut AnyConnection = &mut tx;
        let chosen = select_parked(conn, group, selection).await?;
        // Whole orders, in log order; records without an order stand alone.
        let orders: Vec<Uuid> = {
            let mut o: Vec<Uuid> = chosen.iter().filter_map(|p| p.order_id).collect();
            o.sort();
            o.dedup();
            o
        };
        let mut units: Vec<Vec<Parked>> =
            chosen.into_iter().filter(|p| p.order_id.is_none()).map(|p| vec![p]).collect();
        for order in &orders {
            units.push(select_parked(conn, group, &DeadLetterSelection::Order(*order)).await?);
        }
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for p in units.iter().flatten() {
            by_topic.entry(p.topic.clone()).or_default().push(p.partition);
        }
        for (topic, mut partitions) in by_topic {
            partitions.sort();
            partitions.dedup();
            lock_offsets(conn, self.dialect, group, &topic, &partitions).await?;
        }
        let mut states: HashMap<Uuid, P::State> = load_states::<P::State>(conn, &state_table, &orders).await?;
        let mut outcome = RetryOutcome::default();
        let mut dirty: Vec<Uuid> = Vec::new();
        let mut sku: BTreeMap<String, SkuDelta> = BTreeMap::new();
        for unit in units {
            for parked in unit {
                let result = match parked.payload.as_deref().map(|b| codec.decode(b)) {
                    None => Err("record has no payload".to_string()),
                    Some(Err(e)) => Err(format!("undecodable: {e}")),
                    Some(Ok(event)) if !P::wants(event.kind()) => Ok(None),
                    Some(Ok(event)) => {
                        let at = LogPosition { partition: parked.partition, offset: parked.offset };
                        let effect = P::apply_at(event.order_id().and_then(|id| states.get(&id)), &event, at)
                            .map(Some)
                            .map_err(|r| r.0);
                        if effect.is_ok() {
                            // A record parked as undecodable never had its id claimed; claim it
                            // now so a later copy of the same event is not applied again.
                            sqlx::query(
                                "INSERT INTO processed_events (group_id, event_id) VALUES ($1, $2)
                                 ON CONFLICT (group_id, event_id) DO NOTHING",
                            )
                            .bind(group)
                            .bind(event.envelope().event_id.to_string())
                            .execute(&mut *conn)
                            .await?;
                        }
                        effect
                    }
                };
                match result {
                    Ok(effect) => {
                        if let Some(state) = effect.as_ref().and_then(|e| e.order.clone()) {
                            dirty.push(state.order_id());
                            states.insert(state.order_id(), state);
                        }
                        for (s, delta) in effect.map(|e| e.sku_deltas).unwrap_or_default() {
                            sku.entry(s).or_default().add(delta);
                        }
                        sqlx::query("UPDATE dead_letters SET status = 'retried', resolved_at_ms = $1 WHERE id = $2")
                            .bind(now_ms())
                            .bind(parked.id)
                            .execute(&mut *conn)
                            .await?;
                        outcome.applied.push(parked.id);
                    }
                    Err(reason) => {
                        sqlx::query("UPDATE dead_letters SET reason = $1 WHERE id = $2")
                            .bind(&reason)
                            .bind(parked.id)
                            .execute(&mut *conn)
                            .await?;
                        outcome.still_parked.push((parked.id, reason));
                        // The order's later records wait behind this one.
                        break;
                    }
                }
            }
        }
        dirty.sort();
        dirty.dedup();
        let changed: Vec<&P::State> = dirty.iter().filter_map(|id| states.get(id)).collect();
        write_states(conn, &state_table, &changed).await?;
        write_sku_deltas(conn, &sku_table, &sku).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

async fn select_parked(
    conn: &mut AnyConnection,
    group: &str,
    selection: &DeadLetterSelection,
) -> Result<Vec<Parked>, StoreError> {
    let columns = "id, topic, partition_id, record_offset, order_id, payload";
    let rows = match selection {
        DeadLetterSelection::Order(order) => {
            sqlx::query(&format!(
                "SELECT {columns} FROM dead_letters WHERE group_id = $1 AND order_id = $2 AND status = 'parked'
                 ORDER BY partition_id, record_offset"
            ))
            .bind(group)
            .bind(order.to_string())
            .fetch_all(&mut *conn)
            .await?
        }
        DeadLetterSelection::Ids(ids) => {
            let mut q = super::sql::Sql::new(format!(
                "SELECT {columns} FROM dead_letters WHERE status = 'parked' AND group_id = "
            ));
            q.bind(group.to_string()).push(" AND id IN ").list(ids.iter().copied());
            q.push(" ORDER BY partition_id, record_offset");
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            q.fetch_all(&mut *conn).await?
        }
    };
    rows.iter()
        .map(|r| {
            let order_id: Option<String> = r.try_get("order_id")?;
            Ok(Parked {
                id: r.try_get("id")?,
                topic: r.try_get("topic")?,
                partition: r.try_get::<i64, _>("partition_id")? as i32,
                offset: r.try_get("record_offset")?,
                order_id: order_id.and_then(|s| Uuid::parse_str(&s).ok()),
                payload: r.try_get("payload")?,
            })
        })
        .collect()
}
