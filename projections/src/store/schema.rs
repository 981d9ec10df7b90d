//! Tables and the analyst views, for both databases. Each statement is idempotent, so
//! every member runs them at start; on PostgreSQL an advisory lock keeps concurrent
//! members from racing on the catalog.
//!
//! Projection tables come in generations: generation 1 uses the plain names
//! (`payment_orders`), generation N the suffix `_gN`. A shadow rebuild fills a new
//! generation while the views keep pointing at the live one, then repoints the views in
//! one transaction. Analysts and the query API read the views only.
use super::Dialect;

/// The read-only role analysts log in as on PostgreSQL: it may SELECT the views and
/// nothing else (no tables, no offsets, no dead letters). Operators give it a password
/// (`ALTER ROLE orderflow_analyst PASSWORD …`) where the server asks for one.
pub const ANALYST_ROLE: &str = "orderflow_analyst";

/// Every projection by name, in the order tools list them.
pub const PROJECTIONS: [&str; 4] = ["inventory", "payment", "fulfilment", "history"];

/// Taken around migrations and view switches on PostgreSQL.
pub const CATALOG_LOCK: i64 = 7_142_001;

/// The views analysts read.
pub const VIEWS: [&str; 5] =
    ["inventory_levels", "inventory_reservations", "order_payments", "order_fulfilment", "order_history"];

pub fn table_name(base: &str, generation: i64) -> String {
    if generation <= 1 {
        base.to_string()
    } else {
        format!("{base}_g{generation}")
    }
}

/// The tables one generation of a projection owns.
pub fn tables_of(projection: &str) -> &'static [&'static str] {
    match projection {
        "inventory" => &["inventory_sku", "inventory_orders"],
        "payment" => &["payment_orders"],
        "fulfilment" => &["fulfilment_orders"],
        "history" => &["history_orders"],
        _ => &[],
    }
}

fn analyst_grants() -> Vec<String> {
    vec![
        // Roles are cluster-wide: several databases may race to create it.
        format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ANALYST_ROLE}') THEN
                 CREATE ROLE {ANALYST_ROLE} LOGIN;
               END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$"
        ),
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ANALYST_ROLE}"),
        format!("GRANT SELECT ON {} TO {ANALYST_ROLE}", VIEWS.join(", ")),
    ]
}

/// Tables shared by all projections and generations.
pub fn common_statements(dialect: Dialect) -> Vec<String> {
    let (bytes, serial) = match dialect {
        Dialect::Postgres => ("BYTEA", "BIGSERIAL PRIMARY KEY"),
        Dialect::Sqlite => ("BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT"),
    };
    vec![
        // The next offset to read per (group, topic, partition): the projection's own copy,
        // changed in the same transaction as the projection rows.
        "CREATE TABLE IF NOT EXISTS consumer_offsets (
            group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id BIGINT NOT NULL,
            next_offset BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL,
            PRIMARY KEY (group_id, topic, partition_id))"
            .into(),
        // Event ids already applied per group: a retried publish that landed twice is
        // applied once.
        "CREATE TABLE IF NOT EXISTS processed_events (
            group_id TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (group_id, event_id))"
            .into(),
        // status: parked (blocks its order), retried (applied later), skipped (dropped by an operator).
        format!(
            "CREATE TABLE IF NOT EXISTS dead_letters (
            id {serial}, group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id BIGINT NOT NULL,
            record_offset BIGINT NOT NULL, record_key TEXT, order_id TEXT, reason TEXT NOT NULL,
            payload {bytes}, created_at_ms BIGINT NOT NULL,
            status TEXT NOT NULL DEFAULT 'parked', resolved_at_ms BIGINT,
            UNIQUE (group_id, topic, partition_id, record_offset))"
        ),
        "CREATE INDEX IF NOT EXISTS dead_letters_by_order ON dead_letters (group_id, order_id)".into(),
        // Which generation (and group) each projection's views show.
        "CREATE TABLE IF NOT EXISTS projection_live (
            projection TEXT PRIMARY KEY, generation BIGINT NOT NULL, group_id TEXT NOT NULL,
            switched_at_ms BIGINT NOT NULL)"
            .into(),
        // Members used to report their partitions here; the broker's own group description
        // is the source now, so databases of earlier releases lose the table.
        "DROP TABLE IF EXISTS group_members".into(),
        // Which generation a group writes; groups not listed write generation 1.
        "CREATE TABLE IF NOT EXISTS projection_groups (
            group_id TEXT PRIMARY KEY, projection TEXT NOT NULL, generation BIGINT NOT NULL,
            created_at_ms BIGINT NOT NULL)"
            .into(),
    ]
}

/// The tables of one generation of a projection.
pub fn table_statements(projection: &str, generation: i64) -> Vec<String> {
    let t = |base: &str| table_name(base, generation);
    match projection {
        "inventory" => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                sku TEXT PRIMARY KEY, on_hand BIGINT NOT NULL, reserved BIGINT NOT NULL, shipped BIGINT NOT NULL)",
                t("inventory_sku")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (order_id TEXT PRIMARY KEY, status TEXT NOT NULL, lines TEXT NOT NULL)",
                t("inventory_orders")
            ),
        ],
        "payment" => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                order_id TEXT PRIMARY KEY, currency TEXT NOT NULL, order_total_minor BIGINT NOT NULL,
                authorized_minor BIGINT NOT NULL, captured_minor BIGINT NOT NULL, refunded_minor BIGINT NOT NULL,
                status TEXT NOT NULL, placed_at_us BIGINT NOT NULL, captured_at_us BIGINT)",
                t("payment_orders")
            ),
            format!("CREATE INDEX IF NOT EXISTS {0}_by_capture ON {0} (captured_at_us)", t("payment_orders")),
        ],
        "fulfilment" => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                order_id TEXT PRIMARY KEY, status TEXT NOT NULL, warehouse TEXT, placed_at_us BIGINT NOT NULL,
                paid_at_us BIGINT, shipped_at_us BIGINT, delivered_at_us BIGINT)",
                t("fulfilment_orders")
            ),
            format!("CREATE INDEX IF NOT EXISTS {0}_by_status ON {0} (status, placed_at_us)", t("fulfilment_orders")),
        ],
        "history" => vec![format!(
            "CREATE TABLE IF NOT EXISTS {} (order_id TEXT PRIMARY KEY, events TEXT NOT NULL)",
            t("history_orders")
        )],
        _ => Vec::new(),
    }
}

pub fn drop_statements(projection: &str, generation: i64) -> Vec<String> {
    tables_of(projection).iter().map(|base| format!("DROP TABLE IF EXISTS {}", table_name(base, generation))).collect()
}

/// The views of a projection, pointing at one generation. On PostgreSQL `CREATE OR
/// REPLACE` keeps grants; SQLite has no such statement, so its views are dropped and
/// created (inside the caller's transaction, so readers never see them missing).
pub fn view_statements(dialect: Dialect, projection: &str, generation: i64) -> Vec<String> {
    let t = |base: &str| table_name(base, generation);
    let ts = |column: &str| match dialect {
        Dialect::Postgres => format!("to_timestamp({column} / 1000000.0)"),
        Dialect::Sqlite => format!("strftime('%Y-%m-%dT%H:%M:%fZ', {column} / 1000000.0, 'unixepoch')"),
    };
    let views: Vec<(&str, String)> = match projection {
        "inventory" => vec![
            (
                "inventory_levels",
                format!(
                    "SELECT sku, on_hand, reserved, shipped, on_hand - reserved AS available FROM {}",
                    t("inventory_sku")
                ),
            ),
            ("inventory_reservations", format!("SELECT order_id, status, lines FROM {}", t("inventory_orders"))),
        ],
        "payment" => vec![(
            "order_payments",
            format!(
                "SELECT order_id, currency, order_total_minor, authorized_minor, captured_minor, refunded_minor, status,
                 {} AS placed_at, {} AS captured_at, placed_at_us, captured_at_us FROM {}",
                ts("placed_at_us"),
                ts("captured_at_us"),
                t("payment_orders")
            ),
        )],
        "fulfilment" => vec![(
            "order_fulfilment",
            format!(
                "SELECT order_id, status, warehouse, {} AS placed_at, {} AS paid_at, {} AS shipped_at, {} AS delivered_at,
                 placed_at_us, paid_at_us, shipped_at_us, delivered_at_us FROM {}",
                ts("placed_at_us"),
                ts("paid_at_us"),
                ts("shipped_at_us"),
                ts("delivered_at_us"),
                t("fulfilment_orders")
            ),
        )],
        "history" => vec![("order_history", format!("SELECT order_id, events FROM {}", t("history_orders")))],
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for (name, select) in views {
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

pub fn grant_statements(dialect: Dialect) -> Vec<String> {
    match dialect {
        Dialect::Postgres => analyst_grants(),
        Dialect::Sqlite => Vec::new(),
    }
}

/// Columns added after a table's first release, per table base name: `(column, type)`.
/// Migrations add any that an existing table lacks, so older databases keep starting;
/// rows written before get the default (rebuild the projection to fill them from the log).
pub fn added_columns(base: &str) -> &'static [(&'static str, &'static str)] {
    match base {
        "dead_letters" => &[("status", "TEXT NOT NULL DEFAULT 'parked'"), ("resolved_at_ms", "BIGINT")],
        "payment_orders" => &[("placed_at_us", "BIGINT NOT NULL DEFAULT 0"), ("captured_at_us", "BIGINT")],
        _ => &[],
    }
}
