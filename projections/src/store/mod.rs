//! The SQL side of the projections, one implementation for PostgreSQL and SQLite through
//! sqlx's `Any` driver; the few differences are in [`Dialect`].
mod batch;
mod error;
pub mod fault;
mod rows;
mod schema;
mod snapshot;
mod sql;

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

pub use batch::{BatchOutcome, LogRecord, StoredProjection};
pub use error::StoreError;
pub use rows::StoredState;
pub use snapshot::{DeadLetterRow, InventoryLevel, Snapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// A connection pool to a projection database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("Store").field("dialect", &self.dialect).finish()
    }
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://…` and creates tables and views if needed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") { Dialect::Sqlite } else { Dialect::Postgres };
        let options = AnyPoolOptions::new()
            // A dead database must yield errors quickly, never a hang.
            .acquire_timeout(Duration::from_secs(5));
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
            Dialect::Postgres => options.max_connections(4).connect(url).await?,
        };
        let store = Store { pool, dialect };
        store.migrate().await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    #[tracing::instrument(skip(self))]
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        if self.dialect == Dialect::Postgres {
            conn.execute("SELECT pg_advisory_lock(7142001)").await?;
        }
        let mut result = Ok(());
        for statement in schema::statements(self.dialect) {
            if let Err(e) = conn.execute(statement.as_str()).await {
                result = Err(e.into());
                break;
            }
        }
        if self.dialect == Dialect::Postgres {
            conn.execute("SELECT pg_advisory_unlock(7142001)").await?;
        }
        result
    }

    /// The stored next offsets of a group for the given partitions (absent: never read).
    #[tracing::instrument(skip(self))]
    pub async fn stored_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, i64)>, StoreError> {
        batch::stored_offsets(&self.pool, group, topic, partitions).await
    }
}
