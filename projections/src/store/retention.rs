//! What the store forgets, so its tables stay bounded over a long run: event ids older
//! than the dedupe window (a retried publish arrives within seconds or minutes, never
//! weeks later), and dead letters an operator resolved (retried or skipped) long ago.
//! Parked dead letters are never pruned: they still hold back their orders.
//!
//! Pruning deletes in small batches, each its own short transaction, so it never holds
//! what a batch of a consumer group needs for long; on PostgreSQL an advisory lock lets
//! one process per database prune at a time.
use std::time::Duration;

use sqlx::{Executor, Row};

use super::connection::Dialect;
use super::error::StoreError;
use super::roles::Operations;

/// How long the store remembers what it may forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Event ids claimed longer ago are forgotten: a copy of an event arriving later
    /// than this would be applied again. At least the topic's retention (a rebuild
    /// re-reads nothing older than that), and at least the checkout's key retention.
    pub dedupe_window: Duration,
    /// Resolved dead letters are forgotten this long after their resolution.
    pub resolved_dead_letters: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            dedupe_window: Duration::from_secs(7 * 24 * 3600),
            resolved_dead_letters: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// What one pruning pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub event_ids: u64,
    pub dead_letters: u64,
}

/// Taken (without waiting) around a pruning pass on PostgreSQL.
const PRUNE_LOCK: i64 = 7_142_002;
/// Rows per delete statement.
const BATCH: i64 = 5_000;

fn cutoff(window: Duration) -> i64 {
    schemas::clock::now_ms() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

impl Operations {
    /// Forgets what `retention` allows, in batches; returns how much, or `None` when
    /// another process is pruning this database right now.
    #[tracing::instrument(skip(self))]
    pub async fn prune(&self, retention: Retention) -> Result<Option<Pruned>, StoreError> {
        let mut conn = self.store.pool.acquire().await?;
        if self.store.dialect == Dialect::Postgres {
            let row = sqlx::query(&format!("SELECT pg_try_advisory_lock({PRUNE_LOCK}) AS locked"))
                .fetch_one(&mut *conn)
                .await?;
            if !row.try_get::<bool, _>("locked")? {
                return Ok(None);
            }
        }
        let result = self.prune_locked(&mut conn, retention).await;
        if self.store.dialect == Dialect::Postgres {
            conn.execute(format!("SELECT pg_advisory_unlock({PRUNE_LOCK})").as_str()).await?;
        }
        result.map(Some)
    }

    async fn prune_locked(&self, conn: &mut sqlx::AnyConnection, retention: Retention) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        let ids_before = cutoff(retention.dedupe_window);
        loop {
            let done = sqlx::query(
                "DELETE FROM processed_events WHERE (group_id, event_id) IN
                 (SELECT group_id, event_id FROM processed_events WHERE applied_at_ms < $1 LIMIT $2)",
            )
            .bind(ids_before)
            .bind(BATCH)
            .execute(&mut *conn)
            .await?;
            pruned.event_ids += done.rows_affected();
            if done.rows_affected() < BATCH as u64 {
                break;
            }
            // Room for the groups' batches between two deletes.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let letters_before = cutoff(retention.resolved_dead_letters);
        loop {
            let done = sqlx::query(
                "DELETE FROM dead_letters WHERE id IN
                 (SELECT id FROM dead_letters WHERE status <> 'parked' AND resolved_at_ms < $1 LIMIT $2)",
            )
            .bind(letters_before)
            .bind(BATCH)
            .execute(&mut *conn)
            .await?;
            pruned.dead_letters += done.rows_affected();
            if done.rows_affected() < BATCH as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(pruned)
    }
}
