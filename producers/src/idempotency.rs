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
use crate::group_commit::{GroupCommit, Write};

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

/// The purge forgets keys by when they were first claimed: without this index it read every
/// key of the retention period (a week of them) every round.
const KEYS_BY_EPOCH: &str = "CREATE INDEX IF NOT EXISTS checkout_keys_by_epoch ON checkout_keys (epoch_ms)";

/// What the checkout's schema is made of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Object {
    Table,
    Index,
}

/// The checkout's tables and index, with their definitions.
const OBJECTS: [(Object, &str, &str); 3] = [
    (Object::Table, "checkout_keys", SCHEMA),
    (Object::Table, "checkout_orders", OWNERS),
    (Object::Index, "checkout_keys_by_epoch", KEYS_BY_EPOCH),
];

/// The `scope` of a row whose `idempotency_key` is a [`key_digest`] (rows of earlier
/// releases kept the scope and the key as sent; they are rewritten at start-up).
const DIGESTED: &str = "#";

/// How a key is stored and named on the log: SHA-256 of its scope and itself, hex. The
/// scope names the principal and the path, so two callers' keys never collide.
pub fn key_digest(scope: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(scope.as_bytes());
    hasher.update(b"\n");
    hasher.update(key.as_bytes());
    hex::encode(hasher.finalize())
}

/// What a record appended under an Idempotency-Key carries in its
/// [`schemas::REQUEST_HEADER`]: enough to rebuild the key's row, nothing that reveals it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub key_digest: String,
    pub request_hash: String,
    pub epoch_ms: i64,
}

impl std::fmt::Display for RequestHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v1 {} {} {}", self.key_digest, self.request_hash, self.epoch_ms)
    }
}

impl RequestHeader {
    /// Reads a header value; `None` for anything not written by [`Display`](std::fmt::Display).
    pub fn parse(raw: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok()?;
        let mut parts = text.split(' ');
        let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("v1"), Some(key), Some(hash), Some(epoch), None) if hex64(key) && hex64(hash) => {
                Some(RequestHeader { key_digest: key.into(), request_hash: hash.into(), epoch_ms: epoch.parse().ok()? })
            }
            _ => None,
        }
    }
}

/// A key's row rebuilt from the record appended under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredKey {
    pub request: RequestHeader,
    pub status: u16,
    pub response: String,
}

/// An order's owner rebuilt from its `OrderPlaced` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredOwner {
    pub order_id: String,
    pub owner: String,
    pub placed_at_ms: i64,
}

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
    /// On PostgreSQL, the per-request writes go out grouped ([`GroupCommit`]).
    grouped: Option<GroupCommit>,
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
        for (object, name, ddl) in OBJECTS {
            let catalog = match object {
                Object::Table => "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1",
                Object::Index => "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1",
            };
            let exists = database_url.starts_with("postgres")
                && sqlx::query(catalog).bind(name).fetch_optional(&pool).await?.is_some();
            if exists {
                continue;
            }
            match sqlx::query(ddl).execute(&pool).await {
                Ok(_) => {}
                // An upgrade started before `orderflow migrate` ran: only the owner may index
                // its table, and the purge works without the index, slowly.
                Err(e) if object == Object::Index => tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    index = name,
                    "Could not add an index to the checkout's tables (run `orderflow migrate` as their owner). Purging expired idempotency keys reads the whole table until then."
                ),
                Err(e) => return Err(e.into()),
            }
        }
        let grouped = database_url.starts_with("postgres").then(|| GroupCommit::start(pool.clone(), DIGESTED));
        let store = IdempotencyStore { pool, lease, grouped };
        store.digest_legacy_keys().await?;
        Ok(store)
    }

    /// Rewrites rows of earlier releases (the key as sent) into digested rows, so a retry
    /// of a request accepted before the upgrade is still recognised.
    async fn digest_legacy_keys(&self) -> Result<(), IdempotencyError> {
        // Two ranges of the key's first column rather than `<>`, which reads every key.
        let legacy = sqlx::query("SELECT scope, idempotency_key FROM checkout_keys WHERE scope < $1 OR scope > $1")
            .bind(DIGESTED)
            .fetch_all(&self.pool)
            .await?;
        for row in legacy {
            let (scope, key): (String, String) = (row.try_get("scope")?, row.try_get("idempotency_key")?);
            sqlx::query(
                "UPDATE checkout_keys SET scope = $1, idempotency_key = $2 WHERE scope = $3 AND idempotency_key = $4",
            )
            .bind(DIGESTED)
            .bind(key_digest(&scope, &key))
            .bind(&scope)
            .bind(&key)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Puts back keys and owners rebuilt from the log. A key the store holds completed
    /// stays as it is; one in flight or unknown there (the append happened, its answer was
    /// never recorded) becomes completed with the rebuilt answer. Keys first claimed
    /// longer than [`RETENTION`] ago are left out. Returns (keys, owners) written.
    #[tracing::instrument(skip_all, fields(keys = keys.len(), owners = owners.len()))]
    pub async fn restore(
        &self,
        keys: &[RestoredKey],
        owners: &[RestoredOwner],
    ) -> Result<(u64, u64), IdempotencyError> {
        let cutoff = schemas::clock::now_ms() - ms(RETENTION);
        let mut tx = self.pool.begin().await?;
        let mut written = (0, 0);
        for key in keys.iter().filter(|k| k.request.epoch_ms >= cutoff) {
            let done = sqlx::query(
                "INSERT INTO checkout_keys (scope, idempotency_key, request_hash, state, status, response, epoch_ms,
                 lease_until_ms) VALUES ($1, $2, $3, 'done', $4, $5, $6, 0)
                 ON CONFLICT (scope, idempotency_key) DO UPDATE SET state = 'done', status = excluded.status,
                 response = excluded.response WHERE checkout_keys.state <> 'done'
                 AND checkout_keys.request_hash = excluded.request_hash AND checkout_keys.epoch_ms = excluded.epoch_ms",
            )
            .bind(DIGESTED)
            .bind(&key.request.key_digest)
            .bind(&key.request.request_hash)
            .bind(i64::from(key.status))
            .bind(&key.response)
            .bind(key.request.epoch_ms)
            .execute(&mut *tx)
            .await?;
            written.0 += done.rows_affected();
        }
        for owner in owners {
            let done = sqlx::query(
                "INSERT INTO checkout_orders (order_id, owner, placed_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(&owner.order_id)
            .bind(&owner.owner)
            .bind(owner.placed_at_ms)
            .execute(&mut *tx)
            .await?;
            written.1 += done.rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Records `owner` as the principal that placed `order_id`. The first record stands: a
    /// retry of the same placement (same derived id, same principal) changes nothing.
    #[tracing::instrument(skip(self))]
    pub async fn record_owner(&self, order_id: &str, owner: &str) -> Result<(), IdempotencyError> {
        if let Some(group) = &self.grouped {
            let (order_id, owner, at_ms) = (order_id.to_string(), owner.to_string(), schemas::clock::now_ms());
            return group.write(|done| Write::Owner { order_id, owner, at_ms, done }).await;
        }
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
        let digest = key_digest(scope, key);
        let (scope, key) = (DIGESTED, digest.as_str());
        let now = schemas::clock::now_ms();
        let lease_until = now.saturating_add(ms(self.lease));
        let inserted = match &self.grouped {
            Some(group) => {
                let (key, hash) = (key.to_string(), request_hash.to_string());
                group.write(|done| Write::Claim { key, hash, now_ms: now, lease_until_ms: lease_until, done }).await?
            }
            None => {
                sqlx::query(
                    "INSERT INTO checkout_keys (scope, idempotency_key, request_hash, state, epoch_ms, lease_until_ms)
                     VALUES ($1, $2, $3, 'in_flight', $4, $5) ON CONFLICT (scope, idempotency_key) DO NOTHING",
                )
                .bind(scope)
                .bind(key)
                .bind(request_hash)
                .bind(now)
                .bind(lease_until)
                .execute(&self.pool)
                .await?
                .rows_affected()
                    == 1
            }
        };
        if inserted {
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
        let digest = key_digest(scope, key);
        if let Some(group) = &self.grouped {
            let (status, response) = (i64::from(status), response.to_string());
            return group.write(|done| Write::Complete { key: digest, status, response, done }).await;
        }
        let (scope, key) = (DIGESTED, digest.as_str());
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
        let digest = key_digest(scope, key);
        let (scope, key) = (DIGESTED, digest.as_str());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_header_reads_back_what_was_written_and_nothing_else() {
        let header = RequestHeader {
            key_digest: key_digest("shop POST /orders", "k-1"),
            request_hash: "ab".repeat(32),
            epoch_ms: 42,
        };
        assert_eq!(RequestHeader::parse(header.to_string().as_bytes()), Some(header.clone()));
        assert!(!header.to_string().contains("k-1"), "the key itself never leaves the store");
        for bad in ["", "v1", "v2 a b 1", &format!("v1 {} {} x", "a".repeat(64), "b".repeat(64)), "v1 k-1 h 1"] {
            assert_eq!(RequestHeader::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn one_key_under_two_scopes_is_two_rows() {
        assert_ne!(key_digest("a POST /orders", "k"), key_digest("b POST /orders", "k"));
        assert_eq!(key_digest("a POST /orders", "k"), key_digest("a POST /orders", "k"));
    }
}
