//! The checkout's state, kept in SQL so any number of checkout instances share it:
//! idempotency records, and who placed each order (its owner, the only principal that may
//! cancel it).
//!
//! A key is claimed before publishing (`in_flight`, with a lease of the publish deadline
//! plus a margin), completed with the answer after the broker acknowledged (`done`), or
//! marked `unknown` when the outcome is unknown. A retry of the same body may take an
//! `unknown` key, or an `in_flight` one whose lease ran out (its instance died), and
//! publishes again with the *same* ids — derived from the key, the body and the key's
//! epoch — so consumers deduplicate it if the first attempt was written after all. Another
//! body under the same key is refused for as long as the key is remembered, which is at
//! least as long as consumers remember event ids.
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use crate::error::IdempotencyError;

/// How long a key is remembered after its first claim: as long as the consumers' dedupe
/// window (their `processed_events` retention), so a retry inside it is never applied
/// twice, and a key reused after it is a new request with new ids.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Added to the publish deadline for a claim's lease: an instance that is still working
/// has answered by then.
pub const LEASE_MARGIN: Duration = Duration::from_secs(2);

// `checkout_idempotency` of earlier releases had no epoch or lease; it is no longer read.
// The one definition: `orderflow migrate` creates it through `IdempotencyStore::connect` too.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS checkout_keys (
    scope TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    status INTEGER,
    response TEXT,
    epoch_ms BIGINT NOT NULL,
    lease_until_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, idempotency_key)
)";

/// Who placed each order placed through this checkout: one row per order, like the views,
/// never purged (an order's owner must be known for as long as it can be cancelled).
const OWNERS: &str = "CREATE TABLE IF NOT EXISTS checkout_orders (
    order_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    placed_at_ms BIGINT NOT NULL
)";

/// The checkout's tables and their definitions.
const TABLES: [(&str, &str); 2] = [("checkout_keys", SCHEMA), ("checkout_orders", OWNERS)];

/// What the store says about a request carrying an Idempotency-Key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Go ahead and publish (first time, a retry after an unknown outcome, or a takeover
    /// of a dead instance's claim). `epoch_ms` is when the key was first claimed: with the
    /// key and the body it names the request's ids.
    Claimed { epoch_ms: i64 },
    /// The same key with the same body already completed: replay this answer.
    Completed { status: u16, response: String },
    /// The same key is being processed right now; its lease ends after `retry_after`.
    InFlight { retry_after: Duration },
    /// The same key was used with a different body.
    Mismatch,
}

#[derive(Clone)]
pub struct IdempotencyStore {
    pool: AnyPool,
    lease: Duration,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl IdempotencyStore {
    /// Connects and creates the table if needed. Accepts `postgres://` and `sqlite://` URLs.
    /// `lease` bounds how long a claim blocks retries of its key.
    pub async fn connect(database_url: &str, lease: Duration) -> Result<Self, IdempotencyError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            // A dead database must produce errors quickly, never hang a request.
            .acquire_timeout(Duration::from_secs(3))
            .connect(database_url)
            .await?;
        // Under its own PostgreSQL role the checkout may not create tables: the owner made
        // them (`orderflow migrate`), so only create what is missing.
        for (table, ddl) in TABLES {
            let exists = database_url.starts_with("postgres")
                && sqlx::query("SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1")
                    .bind(table)
                    .fetch_optional(&pool)
                    .await?
                    .is_some();
            if !exists {
                sqlx::query(ddl).execute(&pool).await?;
            }
        }
        Ok(IdempotencyStore { pool, lease })
    }

    /// Records `owner` as the principal that placed `order_id`. The first record stands: a
    /// retry of the same placement (same derived id, same principal) changes nothing.
    #[tracing::instrument(skip(self))]
    pub async fn record_owner(&self, order_id: &str, owner: &str) -> Result<(), IdempotencyError> {
        sqlx::query(
            "INSERT INTO checkout_orders (order_id, owner, placed_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(owner)
        .bind(schemas::clock::now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The principal that placed `order_id` through this checkout, if it was.
    #[tracing::instrument(skip(self))]
    pub async fn owner_of(&self, order_id: &str) -> Result<Option<String>, IdempotencyError> {
        let row = sqlx::query("SELECT owner FROM checkout_orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("owner")).transpose()?)
    }

    #[tracing::instrument(skip(self, request_hash))]
    pub async fn claim(&self, scope: &str, key: &str, request_hash: &str) -> Result<Claim, IdempotencyError> {
        let now = schemas::clock::now_ms();
        let lease_until = now.saturating_add(ms(self.lease));
        let inserted = sqlx::query(
            "INSERT INTO checkout_keys (scope, idempotency_key, request_hash, state, epoch_ms, lease_until_ms)
             VALUES ($1, $2, $3, 'in_flight', $4, $5) ON CONFLICT (scope, idempotency_key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .bind(lease_until)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::Claimed { epoch_ms: now });
        }
        let row = sqlx::query(
            "SELECT request_hash, state, status, response, epoch_ms, lease_until_ms FROM checkout_keys
             WHERE scope = $1 AND idempotency_key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            // Purged between our insert and select: the client's retry claims it afresh.
            return Ok(Claim::InFlight { retry_after: Duration::ZERO });
        };
        let epoch: i64 = row.try_get("epoch_ms")?;
        if epoch < now - ms(RETENTION) {
            // Expired but not purged yet: this is a new request under an old key.
            let renewed = self
                .take(
                    "UPDATE checkout_keys SET request_hash = $3, state = 'in_flight', status = NULL, response = NULL,
                     epoch_ms = $4, lease_until_ms = $5 WHERE scope = $1 AND idempotency_key = $2 AND epoch_ms = $6",
                    (scope, key, request_hash, now, lease_until, epoch),
                )
                .await?;
            return Ok(if renewed {
                Claim::Claimed { epoch_ms: now }
            } else {
                Claim::InFlight { retry_after: Duration::ZERO }
            });
        }
        if row.try_get::<String, _>("request_hash")? != request_hash {
            return Ok(Claim::Mismatch);
        }
        let state: String = row.try_get("state")?;
        let held_until: i64 = row.try_get("lease_until_ms")?;
        match state.as_str() {
            "done" => {
                let status = row.try_get::<i64, _>("status")?;
                Ok(Claim::Completed {
                    status: u16::try_from(status).unwrap_or(500),
                    response: row.try_get("response")?,
                })
            }
            // An unknown outcome, or a claim whose lease ran out: this retry takes the key,
            // keeping its epoch (and so its ids).
            "unknown" | "in_flight" if state == "unknown" || held_until < now => {
                let taken = self
                    .take(
                        "UPDATE checkout_keys SET state = 'in_flight', lease_until_ms = $5
                         WHERE scope = $1 AND idempotency_key = $2 AND request_hash = $3 AND epoch_ms = $4
                         AND lease_until_ms = $6",
                        (scope, key, request_hash, epoch, lease_until, held_until),
                    )
                    .await?;
                Ok(if taken { Claim::Claimed { epoch_ms: epoch } } else { Claim::InFlight { retry_after: self.lease } })
            }
            _ => Ok(Claim::InFlight { retry_after: Duration::from_millis((held_until - now).max(0) as u64) }),
        }
    }

    /// Runs a conditional update; whether it changed the row (another instance may have
    /// been faster).
    async fn take(
        &self,
        sql: &str,
        (scope, key, hash, a, b, c): (&str, &str, &str, i64, i64, i64),
    ) -> Result<bool, IdempotencyError> {
        let done =
            sqlx::query(sql).bind(scope).bind(key).bind(hash).bind(a).bind(b).bind(c).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip(self, response))]
    pub async fn complete(&self, scope: &str, key: &str, status: u16, response: &str) -> Result<(), IdempotencyError> {
        sqlx::query(
            "UPDATE checkout_keys SET state = 'done', status = $3, response = $4
             WHERE scope = $1 AND idempotency_key = $2",
        )
        .bind(scope)
        .bind(key)
        .bind(i64::from(status))
        .bind(response)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// After an unknown outcome: a retry of the same body may take the key at once (and
    /// republish the same ids); another body stays refused.
    #[tracing::instrument(skip(self))]
    pub async fn release(&self, scope: &str, key: &str) -> Result<(), IdempotencyError> {
        sqlx::query(
            "UPDATE checkout_keys SET state = 'unknown' WHERE scope = $1 AND idempotency_key = $2 AND state = 'in_flight'",
        )
        .bind(scope)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets keys first claimed longer than [`RETENTION`] ago; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, IdempotencyError> {
        let cutoff = schemas::clock::now_ms() - ms(RETENTION);
        let done =
            sqlx::query("DELETE FROM checkout_keys WHERE epoch_ms < $1").bind(cutoff).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}
