//! The SQL side of the projections, one implementation for PostgreSQL and SQLite through
//! sqlx's `Any` driver; the few differences are in [`Dialect`].
mod batch;
mod dead_letter_actions;
mod error;
pub mod fault;
mod generations;
mod queries;
mod rows;
pub mod schema;
mod snapshot;
mod sql;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, Row};

pub use batch::{BatchOutcome, LogRecord, StoredProjection};
pub use dead_letter_actions::{DeadLetterSelection, RetryOutcome};
pub use error::StoreError;
pub use generations::{default_group, valid_group_prefix, LiveProjection, DEFAULT_GROUP_PREFIX};
pub use queries::*;
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
        let store = Store {
            pool,
            dialect,
            generations: Arc::default(),
            group_prefix: generations::DEFAULT_GROUP_PREFIX.into(),
        };
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
            conn.execute(format!("SELECT pg_advisory_lock({})", schema::CATALOG_LOCK).as_str()).await?;
        }
        let result = self.migrate_locked(&mut conn).await;
        if self.dialect == Dialect::Postgres {
            conn.execute(format!("SELECT pg_advisory_unlock({})", schema::CATALOG_LOCK).as_str()).await?;
        }
        result
    }

    /// One transaction: readers see either the old catalog or the new one.
    async fn migrate_locked(&self, conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
        use sqlx::Connection;
        let mut tx = match self.dialect {
            Dialect::Postgres => conn.begin().await?,
            // Take the write lock up front: a read that later upgrades to a write fails at
            // once with SQLITE_BUSY when another process wrote meanwhile (no busy wait).
            Dialect::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
        };
        for statement in schema::common_statements(self.dialect) {
            tx.execute(statement.as_str()).await?;
        }
        let live: HashMap<String, i64> = sqlx::query("SELECT projection, generation FROM projection_live")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<String, _>("projection")?, r.try_get::<i64, _>("generation")?)))
            .collect::<Result<_, sqlx::Error>>()?;
        self.add_missing_columns(&mut tx, "dead_letters", "dead_letters").await?;
        for projection in schema::PROJECTIONS {
            let generation = live.get(projection).copied().unwrap_or(1);
            // Tables, then columns an older table lacks, then indexes (which may use them).
            let (tables, indexes): (Vec<String>, Vec<String>) = schema::table_statements(projection, generation)
                .into_iter()
                .partition(|s| s.starts_with("CREATE TABLE"));
            for statement in tables {
                tx.execute(statement.as_str()).await?;
            }
            for base in schema::tables_of(projection) {
                self.add_missing_columns(&mut tx, base, &schema::table_name(base, generation)).await?;
            }
            for statement in indexes {
                tx.execute(statement.as_str()).await?;
            }
            for statement in schema::view_statements(self.dialect, projection, generation) {
                tx.execute(statement.as_str()).await?;
            }
        }
        for statement in schema::grant_statements(self.dialect) {
            tx.execute(statement.as_str()).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds the columns a newer release added to `table` if this database predates them.
    async fn add_missing_columns(
        &self,
        conn: &mut sqlx::AnyConnection,
        base: &str,
        table: &str,
    ) -> Result<(), StoreError> {
        let wanted = schema::added_columns(base);
        if wanted.is_empty() {
            return Ok(());
        }
        let query = match self.dialect {
            Dialect::Postgres => {
                "SELECT CAST(column_name AS TEXT) AS name FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1"
            }
            Dialect::Sqlite => "SELECT name FROM pragma_table_info($1)",
        };
        let present: Vec<String> = sqlx::query(query)
            .bind(table)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("name"))
            .collect::<Result<_, _>>()?;
        for (column, ddl) in wanted {
            if !present.iter().any(|p| p == column) {
                tracing::warn!(table, column, "adding a column this database predates");
                conn.execute(format!("ALTER TABLE {table} ADD COLUMN {column} {ddl}").as_str()).await?;
            }
        }
        Ok(())
    }

    /// A transaction that will write. On SQLite it takes the write lock at BEGIN, so it
    /// waits for other writers (busy_timeout) instead of failing when it first writes.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.dialect {
            Dialect::Postgres => self.pool.begin().await?,
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
        })
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
