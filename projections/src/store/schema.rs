//! The database catalog: fixed tables from the `sqlx` migrations under `migrations/<backend>`,
//! and the generation tables and analyst views of every projection, rendered from the
//! registry ([`crate::registry`]).
//!
//! Projection tables come in generations: generation 1 uses the plain names
//! (`payment_orders`), generation N the suffix `_gN`. A shadow rebuild fills a new
//! generation while the views keep pointing at the live one, then repoints the views in
//! one transaction. Analysts and the query API read the views only.
use std::collections::HashMap;

use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, Connection, Executor, Row};

use super::connection::{Dialect, Store};
use super::error::StoreError;
use crate::registry::ProjectionKind;

/// The read-only role analysts log in as on PostgreSQL: it may SELECT the views and
/// nothing else (no tables, no offsets, no dead letters). Operators give it a password
/// (`ALTER ROLE orderflow_analyst PASSWORD …`) where the server asks for one.
pub const ANALYST_ROLE: &str = "orderflow_analyst";

/// Taken around the catalog step of start-up and around view switches on PostgreSQL.
pub const CATALOG_LOCK: i64 = 7_142_001;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");

pub fn table_name(base: &str, generation: i64) -> String {
    if generation <= 1 {
        base.to_string()
    } else {
        format!("{base}_g{generation}")
    }
}

/// Fills in `{t:base}` (a table of `generation`) and `{ts:column}` (microseconds as a
/// timestamp) in a registry statement.
fn render(template: &str, dialect: Dialect, generation: i64) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let placeholder = &rest[start + 1..start + len];
        match placeholder.split_once(':') {
            Some(("t", base)) => out.push_str(&table_name(base, generation)),
            Some(("ts", column)) => out.push_str(&match dialect {
                Dialect::Postgres => format!("to_timestamp({column} / 1000000.0)"),
                Dialect::Sqlite => format!("strftime('%Y-%m-%dT%H:%M:%fZ', {column} / 1000000.0, 'unixepoch')"),
            }),
            Some(("json", spec)) => out.push_str(&json_array(spec, dialect)),
            _ => out.push_str(&rest[start..=start + len]),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// `{json:key=column;…|order}`: a group's rows as a JSON array (text) of objects with those
/// keys, in `order`.
fn json_array(spec: &str, dialect: Dialect) -> String {
    let (pairs, order) = spec.split_once('|').unwrap_or((spec, "1"));
    let fields: Vec<String> = pairs
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, column)| format!("'{}', {}", key.trim(), column.trim()))
        .collect();
    let fields = fields.join(", ");
    match dialect {
        Dialect::Postgres => format!("CAST(json_agg(json_build_object({fields}) ORDER BY {order}) AS TEXT)"),
        Dialect::Sqlite => format!("json_group_array(json_object({fields}) ORDER BY {order})"),
    }
}

/// The tables (and their indexes) of one generation of a projection.
pub fn table_statements(dialect: Dialect, projection: ProjectionKind, generation: i64) -> Vec<String> {
    projection.spec().ddl.iter().map(|ddl| render(ddl, dialect, generation)).collect()
}

pub fn drop_statements(projection: ProjectionKind, generation: i64) -> Vec<String> {
    let spec = projection.spec();
    let old = spec.upgrades.iter().map(|u| u.old_table);
    spec.tables
        .iter()
        .copied()
        .chain(old)
        .map(|base| format!("DROP TABLE IF EXISTS {}", table_name(base, generation)))
        .collect()
}

/// The views of a projection, pointing at one generation. On PostgreSQL `CREATE OR
/// REPLACE` keeps grants; SQLite has no such statement, so its views are dropped and
/// created (inside the caller's transaction, so readers never see them missing).
pub fn view_statements(dialect: Dialect, projection: ProjectionKind, generation: i64) -> Vec<String> {
    let mut out = Vec::new();
    for (name, select) in projection.spec().views {
        let select = render(select, dialect, generation);
        match dialect {
            Dialect::Postgres => out.push(format!("CREATE OR REPLACE VIEW {name} AS {select}")),
            Dialect::Sqlite => {
                out.push(format!("DROP VIEW IF EXISTS {name}"));
                out.push(format!("CREATE VIEW {name} AS {select}"));
            }
        }
    }
    out
}

/// The views over the processes' fixed tables (the order process's state): not
/// generations, since a process is never rebuilt (that would decide again).
const PROCESS_VIEWS: [(&str, &str); 1] = [(
    "order_status",
    "SELECT order_id, status, reason, {ts:updated_at_us} AS updated_at, updated_at_us FROM process_orders",
)];

/// Every view analysts and the query API read: the projections' and the processes'.
pub fn analyst_views() -> impl Iterator<Item = &'static str> {
    ProjectionKind::all_views().chain(PROCESS_VIEWS.iter().map(|(name, _)| *name))
}

fn process_view_statements(dialect: Dialect) -> Vec<String> {
    PROCESS_VIEWS
        .iter()
        .flat_map(|(name, select)| {
            let select = render(select, dialect, 1);
            match dialect {
                Dialect::Postgres => vec![format!("CREATE OR REPLACE VIEW {name} AS {select}")],
                Dialect::Sqlite => {
                    vec![format!("DROP VIEW IF EXISTS {name}"), format!("CREATE VIEW {name} AS {select}")]
                }
            }
        })
        .collect()
}

/// The login roles of PostgreSQL, one per service, created (without a password) by the
/// catalog step of whoever may manage roles; operators give each a password or a client
/// certificate. Least privilege:
/// - the checkout: its idempotency table only;
/// - the consumers (members, rebuild, dead-letter and offset commands): they own the
///   projection, offset and dead-letter tables and the views (a rebuild creates tables and
///   repoints the views);
/// - the query API: SELECT on the views and on what read-your-writes, lag and the timeline
///   read (offsets, offset faults, dead letters, generations), nothing else;
/// - analysts ([`ANALYST_ROLE`]): the views only.
pub const CHECKOUT_ROLE: &str = "orderflow_checkout";
pub const CONSUMER_ROLE: &str = "orderflow_consumer";
pub const QUERY_ROLE: &str = "orderflow_query";
pub const SERVICE_ROLES: [&str; 4] = [CHECKOUT_ROLE, CONSUMER_ROLE, QUERY_ROLE, ANALYST_ROLE];

/// The checkout's tables (`producers::idempotency` makes them): its role's, never the
/// consumers'.
const CHECKOUT_TABLES: [&str; 2] = ["checkout_keys", "checkout_orders"];

/// What the query API reads besides the views.
const QUERY_READS: [&str; 5] =
    ["consumer_offsets", "offset_faults", "dead_letters", "projection_live", "projection_groups"];

/// Gives every table and view but the checkout's and the migrations' to the consumers'
/// role (also after a rebuild run by the owner made new tables).
pub(super) fn hand_over_statement() -> String {
    format!(
        "DO $$ DECLARE r record; BEGIN
           IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{CONSUMER_ROLE}') THEN
             FOR r IN SELECT tablename AS name, 'TABLE' AS kind FROM pg_tables
                        WHERE schemaname = current_schema() AND tablename NOT IN ({}, '_sqlx_migrations')
                          AND tableowner <> '{CONSUMER_ROLE}'
                      UNION ALL
                      SELECT viewname, 'VIEW' FROM pg_views
                        WHERE schemaname = current_schema() AND viewowner <> '{CONSUMER_ROLE}' LOOP
               EXECUTE format('ALTER %s %I OWNER TO {CONSUMER_ROLE}', r.kind, r.name);
             END LOOP;
           END IF;
         END $$",
        CHECKOUT_TABLES.map(|t| format!("'{t}'")).join(", ")
    )
}

fn grant_statements(dialect: Dialect) -> Vec<String> {
    if dialect == Dialect::Sqlite {
        return Vec::new();
    }
    let views = analyst_views().collect::<Vec<&str>>().join(", ");
    let mut out = Vec::new();
    for role in SERVICE_ROLES {
        // Roles are cluster-wide: several databases may race to create one.
        out.push(format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                 CREATE ROLE {role} LOGIN;
               END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$"
        ));
        out.push(format!("GRANT USAGE ON SCHEMA public TO {role}"));
    }
    for role in [CHECKOUT_ROLE, QUERY_ROLE, ANALYST_ROLE] {
        out.push(format!("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"));
    }
    out.push(hand_over_statement());
    out.push(format!("GRANT CREATE ON SCHEMA public TO {CONSUMER_ROLE}"));
    out.push(format!("GRANT SELECT ON _sqlx_migrations TO {CHECKOUT_ROLE}, {CONSUMER_ROLE}, {QUERY_ROLE}"));
    out.push(format!("GRANT SELECT ON {views} TO {QUERY_ROLE}, {ANALYST_ROLE}"));
    out.push(format!("GRANT SELECT ON {} TO {QUERY_ROLE}", QUERY_READS.join(", ")));
    // Who writes each region's orders: the checkout routes by it.
    out.push(format!("GRANT SELECT ON region_handovers, region_drains TO {CHECKOUT_ROLE}, {QUERY_ROLE}"));
    // The checkout's tables, where the checkout (or `orderflow migrate`) made them in this
    // database; a checkout with a database of its own is granted there.
    for table in CHECKOUT_TABLES {
        out.push(format!(
            "DO $$ BEGIN
               IF to_regclass('{table}') IS NOT NULL THEN
                 GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {CHECKOUT_ROLE};
               END IF;
             END $$"
        ));
    }
    out
}

impl Store {
    /// Brings the database to this release's catalog: the migrations, then each
    /// projection's live generation tables and views, then the analyst grants.
    #[tracing::instrument(skip(self))]
    pub(super) async fn prepare_catalog(&self) -> Result<(), StoreError> {
        if self.dialect == Dialect::Postgres && (self.is_standby().await? || !self.manages_catalog().await?) {
            // A service running under its own role (see `SERVICE_ROLES`) may not change
            // the catalog; the owner migrated it (`orderflow migrate`), or it says so.
            return self.check_migrated().await;
        }
        self.run_migrations().await?;
        let mut conn = self.pool.acquire().await?;
        if self.dialect == Dialect::Postgres {
            conn.execute(format!("SELECT pg_advisory_lock({CATALOG_LOCK})").as_str()).await?;
        }
        let result = self.create_generation_objects(&mut conn).await;
        if self.dialect == Dialect::Postgres {
            conn.execute(format!("SELECT pg_advisory_unlock({CATALOG_LOCK})").as_str()).await?;
        }
        result
    }

    /// Whether the server is a read-only standby (a streaming replica): nothing can change
    /// its catalog, which comes from the primary with the rows.
    pub(super) async fn is_standby(&self) -> Result<bool, StoreError> {
        let standby: i32 =
            sqlx::query_scalar("SELECT CAST(pg_is_in_recovery() AS INTEGER)").fetch_one(&self.pool).await?;
        Ok(standby == 1)
    }

    /// Whether this connection's role may create roles (a superuser, or a managed
    /// service's admin user with CREATEROLE): only such a role migrates and grants.
    pub(super) async fn manages_catalog(&self) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(rolsuper OR rolcreaterole AS INTEGER) AS manages FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => row.try_get::<i32, _>("manages")? == 1,
            None => false,
        })
    }

    /// Every migration of this release is applied.
    async fn check_migrated(&self) -> Result<(), StoreError> {
        let not_migrated = |why: String| {
            StoreError::Invalid(format!(
                "{why}: run `orderflow migrate --database-url <the owner's URL>` once as a role that may create \
                 roles, then start this service under its own role"
            ))
        };
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| not_migrated(format!("the database is not migrated ({e})")))?;
        let missing: Vec<i64> =
            POSTGRES_MIGRATIONS.iter().map(|m| m.version).filter(|v| !applied.contains(v)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(not_migrated(format!("migrations {missing:?} are not applied")))
        }
    }

    async fn run_migrations(&self) -> Result<(), StoreError> {
        let migrator = match self.dialect {
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
        };
        // PostgreSQL migrations run under sqlx's advisory lock. SQLite has no such lock:
        // two processes starting at once may both try the first migration, and the loser
        // fails on the version row; by then the migration is applied, so looking again
        // succeeds.
        let mut attempt = 0;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if self.dialect == Dialect::Sqlite && attempt < 3 => {
                    attempt += 1;
                    tracing::debug!(
                        error = &e as &dyn std::error::Error,
                        attempt,
                        "A migration raced with another process. Looking again."
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => return Err(StoreError::Migrate(e)),
            }
        }
    }

    /// One transaction: readers see either the old catalog or the new one.
    async fn create_generation_objects(&self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        let mut tx = match self.dialect {
            Dialect::Postgres => conn.begin().await?,
            // Take the write lock up front: a read that later upgrades to a write fails at
            // once with SQLITE_BUSY when another process wrote meanwhile (no busy wait).
            Dialect::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
        };
        let live: HashMap<String, i64> = sqlx::query("SELECT projection, generation FROM projection_live")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<String, _>("projection")?, r.try_get::<i64, _>("generation")?)))
            .collect::<Result<_, sqlx::Error>>()?;
        for projection in ProjectionKind::ALL {
            let generation = live.get(projection.name()).copied().unwrap_or(1);
            for statement in table_statements(self.dialect, projection, generation) {
                tx.execute(statement.as_str()).await?;
            }
            for (base, definition) in projection.spec().added_columns {
                add_column_if_missing(&mut tx, self.dialect, &table_name(base, generation), definition).await?;
            }
            let mut upgraded = Vec::new();
            for upgrade in projection.spec().upgrades {
                let old = table_name(upgrade.old_table, generation);
                if table_exists(&mut tx, self.dialect, &old).await? {
                    tracing::warn!(table = %old, "Moving the rows of an earlier release's table into the current ones.");
                    let copy = upgrade.copy[usize::from(self.dialect == Dialect::Sqlite)];
                    tx.execute(render(copy, self.dialect, generation).as_str()).await?;
                    upgraded.push(old);
                }
            }
            for statement in view_statements(self.dialect, projection, generation) {
                tx.execute(statement.as_str()).await?;
            }
            // Only now: the views no longer read them.
            for old in upgraded {
                tx.execute(format!("DROP TABLE {old}").as_str()).await?;
            }
        }
        for statement in process_view_statements(self.dialect) {
            tx.execute(statement.as_str()).await?;
        }
        for statement in grant_statements(self.dialect) {
            tx.execute(statement.as_str()).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Adds a column (`name TYPE`) to `table` unless it has one of that name.
async fn add_column_if_missing(
    conn: &mut AnyConnection,
    dialect: Dialect,
    table: &str,
    definition: &str,
) -> Result<(), StoreError> {
    let name = definition.split_whitespace().next().unwrap_or(definition);
    let sql = match dialect {
        Dialect::Postgres => {
            "SELECT COUNT(*) AS n FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2"
        }
        Dialect::Sqlite => "SELECT COUNT(*) AS n FROM pragma_table_info($1) WHERE name = $2",
    };
    let row = sqlx::query(sql).bind(table).bind(name).fetch_one(&mut *conn).await?;
    if row.try_get::<i64, _>("n")? == 0 {
        tracing::warn!(%table, column = name, "Adding a column an earlier release's table lacks.");
        conn.execute(format!("ALTER TABLE {table} ADD COLUMN {definition}").as_str()).await?;
    }
    Ok(())
}

async fn table_exists(conn: &mut AnyConnection, dialect: Dialect, table: &str) -> Result<bool, StoreError> {
    let sql = match dialect {
        Dialect::Postgres => {
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
        }
        Dialect::Sqlite => "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = $1",
    };
    let row = sqlx::query(sql).bind(table).fetch_one(&mut *conn).await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_generation_tables_and_dialect_timestamps() {
        let sql = render("SELECT {ts:placed_at_us} FROM {t:payment_orders} WHERE x = '{}'", Dialect::Postgres, 3);
        assert_eq!(sql, "SELECT to_timestamp(placed_at_us / 1000000.0) FROM payment_orders_g3 WHERE x = '{}'");
        assert_eq!(render("{t:payment_orders}", Dialect::Sqlite, 1), "payment_orders");
        assert_eq!(
            render("{json:a=x;b=y|x}", Dialect::Postgres, 1),
            "CAST(json_agg(json_build_object('a', x, 'b', y) ORDER BY x) AS TEXT)"
        );
        assert_eq!(
            render("{json:a=x|x, y}", Dialect::Sqlite, 1),
            "json_group_array(json_object('a', x) ORDER BY x, y)"
        );
    }
}
