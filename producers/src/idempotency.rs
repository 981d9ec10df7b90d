//! Idempotency records: the checkout's only state, kept in SQL so any number of checkout
//! instances share them. A record is claimed before publishing (`in_flight`), completed
//! with the response after the broker acknowledged (`done`), and released when the outcome
//! is unknown so the client's retry can run (the retry reuses the event id, so consumers
//! deduplicate it if the first attempt was written after all).
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use crate::error::IdempotencyError;

/// How long a key is remembered after its request completed.
pub const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// An `in_flight` claim older than this belongs to a crashed instance and may be taken over.
pub const CLAIM_LEASE: Duration = Duration::from_secs(60);

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS checkout_idempotency (
    scope TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    status INTEGER,
    response TEXT,
    claimed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, idempotency_key)
)";

/// What the store says about a request carrying an Idempotency-Key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First time (or a takeover of a stale claim): go ahead and publish.
    Claimed,
    /// The same key with the same body already completed: replay this response.
    Completed { status: u16, response: String },
    /// The same key is being processed right now.
    InFlight,
    /// The same key was used with a different body.
    Mismatch,
}

#[derive(Clone)]
pub struct IdempotencyStore {
    pool: AnyPool,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl IdempotencyStore {
    /// Connects and creates the table if needed. Accepts `postgres://` and `sqlite://` URLs.
    pub async fn connect(database_url: &str) -> Result<Self, IdempotencyError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            // A dead database must produce errors quickly, never hang a request.
            .acquire_timeout(Duration::from_secs(3))
            .connect(database_url)
            .await?;
        sqlx::query(SCHEMA).execute(&pool).await?;
        Ok(IdempotencyStore { pool })
    }

    #[tracing::instrument(skip(self, request_hash))]
    pub async fn claim(&self, scope: &str, key: &str, request_hash: &str) -> Result<Claim, IdempotencyError> {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO checkout_idempotency (scope, idempotency_key, request_hash, state, claimed_at_ms)
             VALUES ($1, $2, $3, 'in_flight', $4) ON CONFLICT (scope, idempotency_key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::Claimed);
        }
        let row = sqlx::query(
            "SELECT request_hash, state, status, response, claimed_at_ms FROM checkout_idempotency
             WHERE scope = $1 AND idempotency_key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            // Released between our insert and select: the caller's retry will claim it.
            return Ok(Claim::InFlight);
        };
        if row.try_get::<String, _>("request_hash")? != request_hash {
            return Ok(Claim::Mismatch);
        }
        if row.try_get::<String, _>("state")? == "done" {
            let status = row.try_get::<i64, _>("status")?;
            return Ok(Claim::Completed {
                status: u16::try_from(status).unwrap_or(500),
                response: row.try_get("response")?,
            });
        }
        let stale_before = now - CLAIM_LEASE.as_millis() as i64;
        let taken = sqlx::query(
            "UPDATE checkout_idempotency SET claimed_at_ms = $3
             WHERE scope = $1 AND idempotency_key = $2 AND state = 'in_flight' AND claimed_at_ms < $4",
        )
        .bind(scope)
        .bind(key)
        .bind(now)
        .bind(stale_before)
        .execute(&self.pool)
        .await?;
        Ok(if taken.rows_affected() == 1 { Claim::Claimed } else { Claim::InFlight })
    }

    #[tracing::instrument(skip(self, response))]
    pub async fn complete(&self, scope: &str, key: &str, status: u16, response: &str) -> Result<(), IdempotencyError> {
        sqlx::query(
            "UPDATE checkout_idempotency SET state = 'done', status = $3, response = $4
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

    #[tracing::instrument(skip(self))]
    pub async fn release(&self, scope: &str, key: &str) -> Result<(), IdempotencyError> {
        sqlx::query(
            "DELETE FROM checkout_idempotency WHERE scope = $1 AND idempotency_key = $2 AND state = 'in_flight'",
        )
        .bind(scope)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets keys older than [`RETENTION`]; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, IdempotencyError> {
        let cutoff = now_ms() - RETENTION.as_millis() as i64;
        let done = sqlx::query("DELETE FROM checkout_idempotency WHERE claimed_at_ms < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
