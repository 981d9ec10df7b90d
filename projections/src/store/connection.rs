//! The store itself: one connection pool (and on PostgreSQL a native one for the bulk
//! path), the session limits every connection gets, and the doors to it. Callers never get
//! the pool: each kind of caller takes the handle with its own operations (the doors, in
//! `roles`).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AnyPool, Executor};

use super::error::StoreError;
use crate::registry::{self, GroupKind};

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
    pub(super) pool: AnyPool,
    /// PostgreSQL: native connections for the projections' batches, which write their rows
    /// by binary `COPY` (`Any` has no `COPY`). Same session limits as `pool`.
    pub(super) bulk: Option<PgPool>,
    pub(super) dialect: Dialect,
    /// Which table generation each group writes (fixed once a group exists).
    pub(super) generations: Arc<Mutex<HashMap<String, i64>>>,
    /// Consumer groups are named `<prefix>-<projection>[-gN]`.
    pub(super) group_prefix: Arc<str>,
    /// The region this store's database serves, when there are several: the pool its own
    /// stock group's decisions are levels of.
    pub(super) region: Option<Arc<str>>,
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
            group_prefix: registry::DEFAULT_GROUP_PREFIX.into(),
            region: None,
        };
        store.prepare_catalog().await?;
        Ok(store)
    }

    /// The pool itself, for tests that look at tables no role reads.
    #[cfg(feature = "test-support")]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The consumer group of a projection's first generation or of a process, with this
    /// store's prefix.
    pub fn group(&self, kind: impl Into<GroupKind>) -> String {
        registry::group_name(&self.group_prefix, kind)
    }

    /// Names groups `<prefix>-<projection>` instead of `orderflow-<projection>`, so several
    /// deployments (or test runs) can share one Kafka cluster without sharing groups.
    /// The same store, serving `region` (one of several).
    pub fn with_region(mut self, region: Option<&schemas::Region>) -> Self {
        self.region = region.map(|r| r.as_str().into());
        self
    }

    /// The stock pool a group's decisions are levels of: the region whose log it reads
    /// (a mirror group's source, else this store's region; '' with one region).
    pub(super) fn pool_of(&self, group: &str) -> String {
        registry::source_of(group).or(self.region.as_deref()).unwrap_or_default().to_string()
    }

    pub fn with_group_prefix(mut self, prefix: &str) -> Result<Self, StoreError> {
        if !registry::valid_group_prefix(prefix) {
            return Err(StoreError::Invalid(format!(
                "group prefix {prefix:?} must be 1-200 letters, digits, '.', '_' or '-'"
            )));
        }
        self.group_prefix = prefix.into();
        Ok(self)
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
