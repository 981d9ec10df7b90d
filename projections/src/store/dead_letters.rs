//! Dead letters: records a group could not apply (undecodable, rejected by the projection,
//! or held behind an earlier parked record of their order), parked in `dead_letters` in the
//! same transaction that moves the offset past them. Operators list them, skip them (give
//! up, unblocking their order) or retry them (apply an order's parked records now, in log
//! order). Every statement on that table is in this file.
use std::collections::{BTreeMap, BTreeSet, HashSet};

use schemas::Codec;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use super::error::StoreError;
use super::fold::{decode, Decoded, Fold, Folded, StoredProjection, CHUNK};
use super::offsets::{self, Lock};
use super::records::LogRecord;
use super::roles::{Operations, Reads};
use super::sql::{Exec, Sql};
use crate::model::LogPosition;
use crate::registry::with_model;
use crate::registry::ProjectionKind;

status_enum! {
    /// Where a dead letter stands.
    DeadLetterStatus {
        /// Not applied; later records of its order are parked behind it.
        Parked => "parked",
        /// Applied later by an operator's retry.
        Retried => "retried",
        /// Given up by an operator; its order's later records are no longer held back.
        Skipped => "skipped",
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetterRow {
    pub id: i64,
    pub group_id: String,
    pub partition: i32,
    pub offset: i64,
    pub order_id: Option<String>,
    pub reason: String,
    pub created_at_ms: i64,
    pub status: DeadLetterStatus,
}

/// A record a batch parks.
pub(super) struct NewDeadLetter<'a> {
    pub record: &'a LogRecord,
    pub order_id: Option<Uuid>,
    pub reason: String,
}

impl<'a> NewDeadLetter<'a> {
    /// A record whose event its group refused by its rules ([`crate::model::Rejection`]):
    /// recorded under its order for the timeline, resolved, holding nothing back.
    pub fn refused(record: &'a LogRecord, order_id: Option<Uuid>, rejection: crate::model::Rejection) -> Self {
        NewDeadLetter { record, order_id, reason: format!("refused: {}", rejection.0) }
    }

    /// Parks `record` under the order its key names, if any: lets an undecodable record
    /// still hold back the later events of its order.
    pub fn keyed(record: &'a LogRecord, reason: String) -> Self {
        let order_id =
            record.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()).and_then(|k| Uuid::parse_str(k).ok());
        NewDeadLetter { record, order_id, reason }
    }
}

pub(super) async fn insert<C: Exec>(
    conn: &mut C,
    group: &str,
    topic: &str,
    dead: &[NewDeadLetter<'_>],
    now_ms: i64,
) -> Result<(), StoreError> {
    insert_as(conn, group, topic, dead, DeadLetterStatus::Parked, now_ms).await
}

/// Records events a process refused by its rules: kept for operators to see, already
/// resolved (`skipped`), so they hold nothing back.
pub(super) async fn insert_refused<C: Exec>(
    conn: &mut C,
    group: &str,
    topic: &str,
    refused: &[NewDeadLetter<'_>],
    now_ms: i64,
) -> Result<(), StoreError> {
    insert_as(conn, group, topic, refused, DeadLetterStatus::Skipped, now_ms).await
}

async fn insert_as<C: Exec>(
    conn: &mut C,
    group: &str,
    topic: &str,
    dead: &[NewDeadLetter<'_>],
    status: DeadLetterStatus,
    now_ms: i64,
) -> Result<(), StoreError> {
    let resolved_at = (status != DeadLetterStatus::Parked).then_some(now_ms);
    for chunk in dead.chunks(CHUNK) {
        let mut q = Sql::new(
            "INSERT INTO dead_letters (group_id, topic, partition_id, record_offset, record_key, order_id, reason, payload, created_at_ms, published_by, status, resolved_at_ms) ",
        );
        q.values(chunk, |v, d| {
            v.bind(group.to_string())
                .bind(topic.to_string())
                .bind(i64::from(d.record.partition))
                .bind(d.record.offset)
                .bind(d.record.key.as_deref().map(printable_key))
                .bind(d.order_id.map(|id| id.to_string()))
                .bind(d.reason.clone())
                .bind(d.record.payload.clone())
                .bind(now_ms)
                .bind(d.record.published_by.clone())
                .bind(status.as_str().to_string())
                .bind(resolved_at);
        });
        q.push(" ON CONFLICT (group_id, topic, partition_id, record_offset) DO NOTHING");
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A record key as text the database can store: invalid UTF-8 and NUL (which PostgreSQL
/// refuses in text) become U+FFFD. The raw record stays in `payload`.
fn printable_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', "\u{fffd}")
}

/// Up to this many parked orders of a group are read whole and matched in memory.
const FEW_PARKED: usize = 1_000;

/// Which of `orders` have a parked record in `group`: their later events must park too.
pub(super) async fn parked_orders<C: Exec>(
    conn: &mut C,
    group: &str,
    orders: &[Uuid],
) -> Result<HashSet<Uuid>, StoreError> {
    let postgres = conn.is_postgres();
    if postgres {
        // A group has few parked orders, usually none: reading them all (an index range)
        // and matching here costs less than probing once per order of the batch, and
        // PostgreSQL's generic plan for a join with the batch's keys compares every key
        // with every parked row.
        let mut q = Sql::new("SELECT DISTINCT order_id FROM dead_letters WHERE group_id = ");
        q.bind(group.to_string()).push(" AND status = 'parked' AND order_id IS NOT NULL LIMIT ");
        q.bind(FEW_PARKED as i64 + 1);
        let few = q.rows(conn).await?;
        if few.len() <= FEW_PARKED {
            let wanted: HashSet<&Uuid> = orders.iter().collect();
            let mut parked = HashSet::new();
            for row in &few {
                let id: String = row.try_get("order_id")?;
                parked.extend(Uuid::parse_str(&id).ok().filter(|id| wanted.contains(id)));
            }
            return Ok(parked);
        }
    }
    let mut parked = HashSet::new();
    // PostgreSQL: one statement of fixed text whatever the number of orders, one index
    // probe per order.
    let chunk_size = if postgres { orders.len().max(1) } else { CHUNK };
    for chunk in orders.chunks(chunk_size) {
        let mut q = Sql::new("SELECT DISTINCT d.order_id FROM ");
        if postgres {
            q.push("unnest(").bind(super::sql::text_array(chunk.iter().map(Uuid::to_string)));
            q.push("::text[]) AS k(order_id) CROSS JOIN LATERAL (SELECT order_id FROM dead_letters d");
            q.push(" WHERE d.group_id = ").bind(group.to_string());
            q.push(" AND d.order_id = k.order_id AND d.status = 'parked' LIMIT 1) d");
        } else {
            q.push("dead_letters d WHERE d.status = 'parked' AND d.group_id = ").bind(group.to_string());
            q.push(" AND d.order_id IN ").list(chunk.iter().map(Uuid::to_string));
        }
        for row in q.rows(&mut *conn).await? {
            let id: String = row.try_get("order_id")?;
            parked.extend(Uuid::parse_str(&id).ok());
        }
    }
    Ok(parked)
}

struct Parked {
    id: i64,
    topic: String,
    key: Option<String>,
    partition: i32,
    offset: i64,
    order_id: Option<Uuid>,
    payload: Option<Vec<u8>>,
    published_by: Option<String>,
}

async fn resolve(conn: &mut AnyConnection, id: i64, status: DeadLetterStatus) -> Result<(), StoreError> {
    sqlx::query("UPDATE dead_letters SET status = $1, resolved_at_ms = $2 WHERE id = $3")
        .bind(status.as_str())
        .bind(schemas::clock::now_ms())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn select_parked(
    conn: &mut AnyConnection,
    group: &str,
    selection: &DeadLetterSelection,
) -> Result<Vec<Parked>, StoreError> {
    let mut q =
        Sql::new("SELECT id, topic, partition_id, record_offset, record_key, order_id, payload, published_by FROM dead_letters WHERE status = 'parked' AND group_id = ");
    q.bind(group.to_string());
    match selection {
        DeadLetterSelection::Order(order) => {
            q.push(" AND order_id = ").bind(order.to_string());
        }
        DeadLetterSelection::Ids(ids) if ids.is_empty() => return Ok(Vec::new()),
        DeadLetterSelection::Ids(ids) => {
            q.push(" AND id IN ").list(ids.iter().copied());
        }
    }
    q.push(" ORDER BY partition_id, record_offset");
    let rows = q.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| {
            let order_id: Option<String> = r.try_get("order_id")?;
            Ok(Parked {
                id: r.try_get("id")?,
                topic: r.try_get("topic")?,
                key: r.try_get("record_key")?,
                partition: r.try_get::<i64, _>("partition_id")? as i32,
                offset: r.try_get("record_offset")?,
                order_id: order_id.and_then(|s| Uuid::parse_str(&s).ok()),
                payload: r.try_get("payload")?,
                published_by: r.try_get("published_by")?,
            })
        })
        .collect()
}

impl Operations {
    /// Applies parked records of `group` again through `projection`'s model, in log order,
    /// in one transaction (`retry_dead_letters_as`).
    pub async fn retry_dead_letters(
        &self,
        projection: ProjectionKind,
        group: &str,
        selection: &DeadLetterSelection,
        codec: &Codec,
    ) -> Result<RetryOutcome, StoreError> {
        with_model!(projection, P => self.retry_dead_letters_as::<P>(group, selection, codec).await)
    }

    /// Which projection a group builds, if the database knows it.
    pub async fn projection_of_group(&self, group: &str) -> Result<Option<ProjectionKind>, StoreError> {
        let registered: Option<String> = sqlx::query("SELECT projection FROM projection_groups WHERE group_id = $1")
            .bind(group)
            .fetch_optional(&self.store.pool)
            .await?
            .map(|r| r.try_get("projection"))
            .transpose()?;
        Ok(match registered {
            Some(name) => Some(name.parse().map_err(StoreError::Invalid)?),
            None => ProjectionKind::ALL.into_iter().find(|p| self.store.group(*p) == group),
        })
    }

    /// Marks parked records as skipped: they will never be applied, and their order's
    /// later records are no longer held back by them. Returns the ids it skipped.
    #[tracing::instrument(skip(self))]
    pub async fn skip_dead_letters(
        &self,
        group: &str,
        selection: &DeadLetterSelection,
    ) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.store.begin_write().await?;
        let parked = select_parked(&mut tx, group, selection).await?;
        for p in &parked {
            resolve(&mut tx, p.id, DeadLetterStatus::Skipped).await?;
        }
        tx.commit().await?;
        Ok(parked.iter().map(|p| p.id).collect())
    }

    /// The payloads of a group's parked records: what a retry decodes, so a caller reading
    /// with a schema registry can learn their schema ids first.
    pub async fn parked_payloads(&self, group: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut conn = self.store.pool.acquire().await?;
        let mut q = Sql::new(
            "SELECT payload FROM dead_letters WHERE status = 'parked' AND payload IS NOT NULL AND group_id = ",
        );
        q.bind(group.to_string());
        let rows = q.fetch_all(&mut *conn).await?;
        rows.iter().map(|r| Ok(r.try_get::<Vec<u8>, _>("payload")?)).collect()
    }

    /// Applies parked records again, for after their cause was fixed (a newer binary that
    /// reads them, a skipped record that blocked them). Retrying any record of an order
    /// retries all of that order's parked records in log order, stopping at the first that
    /// is rejected again, so nothing is applied out of order. Runs in one transaction that
    /// holds the group's offset rows of the partitions involved, so no member applies a
    /// batch of those partitions meanwhile.
    #[tracing::instrument(skip(self, codec))]
    async fn retry_dead_letters_as<P: StoredProjection>(
        &self,
        group: &str,
        selection: &DeadLetterSelection,
        codec: &Codec,
    ) -> Result<RetryOutcome, StoreError> {
        let generation = self.store.generation_of(group).await?;
        let mut tx = self.store.begin_write().await?;
        let conn: &mut AnyConnection = &mut tx;
        let chosen = select_parked(conn, group, selection).await?;
        // Whole orders, in log order; records without an order stand alone.
        let orders: Vec<Uuid> = chosen.iter().filter_map(|p| p.order_id).collect::<BTreeSet<_>>().into_iter().collect();
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
            offsets::read(conn, self.store.dialect, group, &topic, Some(&partitions), Lock::ForUpdate).await?;
        }
        let mut fold = Fold::<P>::load(conn, generation, &orders).await?;
        let mut outcome = RetryOutcome::default();
        for unit in units {
            for parked in unit {
                let result = match decode::<P>(
                    codec,
                    parked.key.as_deref().map(str::as_bytes),
                    parked.payload.as_deref(),
                    schemas::TopicRole::by_name(&parked.topic),
                ) {
                    Decoded::Ignored => Ok(()),
                    Decoded::Undecodable(reason) | Decoded::Refused(reason) => Err(reason),
                    Decoded::Event(event) => {
                        let at = LogPosition { partition: parked.partition, offset: parked.offset };
                        let applied = fold.apply(&event, at, parked.published_by.as_deref()).map_err(|r| r.0);
                        if applied == Ok(Folded::Applied) && fold.needs_claim(&event) {
                            // No order row keeps this id (and a record parked as undecodable
                            // never had it claimed): claim it now so a later copy of the
                            // same event is not applied again.
                            super::fold::claim_event_ids(conn, group, &[event.envelope().event_id.to_string()]).await?;
                        }
                        // A copy of an event applied before resolves as retried, applied once.
                        applied.map(|_| ())
                    }
                };
                match result {
                    Ok(()) => {
                        resolve(conn, parked.id, DeadLetterStatus::Retried).await?;
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
        fold.write(conn, &self.store.pool_of(group)).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

impl Reads {
    #[cfg(feature = "test-support")]
    pub async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetterRow>, StoreError> {
        self.list_dead_letters(Some(group), i64::MAX).await
    }

    /// Parked records (not yet retried or skipped), oldest first, of one group or of all groups.
    #[cfg(feature = "test-support")]
    pub async fn list_dead_letters(&self, group: Option<&str>, limit: i64) -> Result<Vec<DeadLetterRow>, StoreError> {
        self.list_dead_letters_with(group, None, true, limit).await
    }

    /// Dead letters of a group (or all), of one order (or all), parked only or also resolved.
    pub async fn list_dead_letters_with(
        &self,
        group: Option<&str>,
        order_id: Option<&str>,
        parked_only: bool,
        limit: i64,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, group_id, partition_id, record_offset, order_id, reason, created_at_ms, status FROM dead_letters
             WHERE ($1 = '' OR group_id = $1) AND ($2 = '' OR order_id = $2) AND ($3 = 0 OR status = 'parked')
             ORDER BY group_id, partition_id, record_offset LIMIT $4",
        )
        .bind(group.unwrap_or(""))
        .bind(order_id.unwrap_or(""))
        .bind(i64::from(parked_only))
        .bind(limit)
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                Ok(DeadLetterRow {
                    id: r.try_get("id")?,
                    group_id: r.try_get("group_id")?,
                    partition: r.try_get::<i64, _>("partition_id")? as i32,
                    offset: r.try_get("record_offset")?,
                    order_id: r.try_get("order_id")?,
                    reason: r.try_get("reason")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                    status: DeadLetterStatus::parse(&status).ok_or_else(|| StoreError::CorruptRow {
                        table: "dead_letters",
                        reason: format!("status {status:?}"),
                    })?,
                })
            })
            .collect()
    }

    /// Parked records per group.
    pub async fn dead_letter_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT group_id, COUNT(*) AS parked FROM dead_letters WHERE status = 'parked' GROUP BY group_id ORDER BY group_id",
        )
        .fetch_all(&self.store.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.try_get("group_id")?, r.try_get("parked")?)))
            .collect::<Result<_, sqlx::Error>>()?)
    }
}
