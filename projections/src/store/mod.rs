//! The SQL side of the projections, one implementation for PostgreSQL and SQLite through
//! sqlx's `Any` driver; the few differences are in [`Dialect`]. One file per concern:
//!
//! - `schema`: migrations, generation tables and views (from [`crate::registry`]);
//! - `batch`: a batch of log records applied with its offsets in one transaction;
//! - `fold`: decode → apply → merge → write, shared by batches and dead-letter retries;
//! - `offsets`: every statement on the stored offsets;
//! - `process`: the order process's and the stock group's batches, timers and outbox;
//! - `dead_letters`: parking, listing, skipping and retrying records;
//! - `generations`: which generation each group writes and the views show; rebuilds;
//! - `reads`: what the query API, the dashboard and tests read;
//! - `retention`: pruning event ids past the dedupe window and long-resolved dead letters;
//! - `rows`: how each projection's state maps to a row; `sql`: the statement builder.
mod audit;
mod batch;
mod dead_letters;
mod error;
pub mod fault;
mod fold;
mod generations;
mod offsets;
mod process;
mod reads;
mod retention;
mod rows;
pub mod schema;
mod sql;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AnyPool, Executor};

pub use audit::OperatorAction;
pub use batch::{Batch, BatchOutcome, DecodedRecords, LogRecord};
pub use dead_letters::{DeadLetterRow, DeadLetterSelection, DeadLetterStatus, RetryOutcome};
pub use error::StoreError;
pub use fold::StoredProjection;
pub use generations::{default_group, valid_group_prefix, LiveProjection, DEFAULT_GROUP_PREFIX};
pub use offsets::{GroupPartitionOffset, OffsetFault, OffsetMove};
pub use process::{DecisionCount, OrderStatusRow, OutboxRow, ProcessKind, ProcessSettings, RelayLease};
pub use reads::{
    rfc3339, CurrencySummary, DailyRevenue, InventoryLevel, OrderView, ReservationView, Snapshot, StatusCount,
};
pub use retention::{Pruned, Retention};
pub use rows::StoredState;
pub use sql::{Binder, Cell, Columns};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// Time limits on every PostgreSQL session of a pool, so that no session can hold locks
/// or a transaction open without end: a member frozen inside its batch transaction
/// (SIGSTOP, a host pause) loses that transaction after `idle_in_transaction`, and whoever
/// waits for its rows gives up after `lock_timeout` and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    pub idle_in_transaction: Duration,
}

impl SessionLimits {
    /// Consumer group members, rebuilds and operator commands: a batch's statements are
    /// short, a lock held by a frozen member is given up within seconds.
    pub const WRITER: SessionLimits = SessionLimits {
        lock_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(60),
        idle_in_transaction: Duration::from_secs(10),
    };
    /// The query API: reads through the views answer quickly or not at all.
    pub const READER: SessionLimits = SessionLimits {
        lock_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(10),
        idle_in_transaction: Duration::from_secs(10),
    };

    fn statements(self) -> [String; 3] {
        [
            format!("SET lock_timeout = {}", self.lock_timeout.as_millis()),
            format!("SET statement_timeout = {}", self.statement_timeout.as_millis()),
            format!("SET idle_in_transaction_session_timeout = {}", self.idle_in_transaction.as_millis()),
        ]
    }
}

/// A connection pool to a projection database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// PostgreSQL: native connections for the projections' batches, which write their rows
    /// by binary `COPY` (`Any` has no `COPY`). Same session limits as `pool`.
    bulk: Option<PgPool>,
    dialect: Dialect,
    /// Which table generation each group writes (fixed once a group exists).
    generations: Arc<Mutex<HashMap<String, i64>>>,
    /// Consumer groups are named `<prefix>-<projection>[-gN]`.
    group_prefix: Arc<str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("Store").field("dialect", &self.dialect).finish()
    }
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://…` as a writer ([`SessionLimits::WRITER`])
    /// and brings the catalog up to date (migrations, the live generations' tables and
    /// views).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, SessionLimits::WRITER).await
    }

    /// [`Store::connect`] with other session limits (PostgreSQL only).
    pub async fn connect_with(url: &str, limits: SessionLimits) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") { Dialect::Sqlite } else { Dialect::Postgres };
        let options = AnyPoolOptions::new()
            // A dead database must yield errors quickly, never a hang.
            .acquire_timeout(Duration::from_secs(5));
        let mut bulk = None;
        let pool = match dialect {
            // SQLite has one writer at a time; one connection serializes batches instead of
            // failing them with SQLITE_BUSY. WAL lets readers run beside it; with WAL,
            // synchronous=NORMAL may lose the newest commits on power loss but never splits
            // a transaction, and offsets roll back with the rows, so effects stay exactly once.
            Dialect::Sqlite => {
                options
                    .max_connections(1)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA journal_mode=WAL").await?;
                            conn.execute("PRAGMA synchronous=NORMAL").await?;
                            conn.execute("PRAGMA busy_timeout=5000").await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Dialect::Postgres => {
                bulk = Some(
                    PgPoolOptions::new()
                        .acquire_timeout(Duration::from_secs(5))
                        .max_connections(4)
                        .after_connect(move |conn, _| {
                            Box::pin(async move {
                                for statement in limits.statements() {
                                    conn.execute(statement.as_str()).await?;
                                }
                                // The staging tables are created with `IF NOT EXISTS` by
                                // every batch: its notice says nothing worth logging.
                                conn.execute("SET client_min_messages = warning").await?;
                                Ok(())
                            })
                        })
                        .connect_lazy(url)?,
                );
                options
                    .max_connections(4)
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            for statement in limits.statements() {
                                conn.execute(statement.as_str()).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
        };
        let store = Store {
            pool,
            bulk,
            dialect,
            generations: Arc::default(),
            group_prefix: generations::DEFAULT_GROUP_PREFIX.into(),
        };
        store.prepare_catalog().await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that will write. On SQLite it takes the write lock at BEGIN, so it
    /// waits for other writers (busy_timeout) instead of failing when it first writes.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.dialect {
            Dialect::Postgres => self.pool.begin().await?,
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
        })
    }
}
