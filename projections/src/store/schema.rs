//! Tables and the analyst views, for both databases. Each statement is idempotent, so
//! every member runs them at start; on PostgreSQL an advisory lock keeps concurrent
//! members from racing on the catalog.
use super::Dialect;

/// The read-only role analysts log in as on PostgreSQL: it may SELECT the views and
/// nothing else (no tables, no offsets, no dead letters). Operators give it a password
/// (`ALTER ROLE orderflow_analyst PASSWORD …`) where the server asks for one.
pub const ANALYST_ROLE: &str = "orderflow_analyst";

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
        format!("GRANT SELECT ON inventory_levels, order_payments, order_fulfilment TO {ANALYST_ROLE}"),
    ]
}

pub fn statements(dialect: Dialect) -> Vec<String> {
    let (bytes, serial, timestamp) = match dialect {
        Dialect::Postgres => ("BYTEA", "BIGSERIAL PRIMARY KEY", "to_timestamp(%c / 1000000.0)"),
        Dialect::Sqlite => {
            ("BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT", "strftime('%Y-%m-%dT%H:%M:%fZ', %c / 1000000.0, 'unixepoch')")
        }
    };
    let ts = |column: &str| timestamp.replace("%c", column);
    let view = match dialect {
        Dialect::Postgres => "CREATE OR REPLACE VIEW",
        Dialect::Sqlite => "CREATE VIEW IF NOT EXISTS",
    };
    let mut all = vec![
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
        format!(
            "CREATE TABLE IF NOT EXISTS dead_letters (
            id {serial}, group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id BIGINT NOT NULL,
            record_offset BIGINT NOT NULL, record_key TEXT, order_id TEXT, reason TEXT NOT NULL,
            payload {bytes}, created_at_ms BIGINT NOT NULL,
            UNIQUE (group_id, topic, partition_id, record_offset))"
        ),
        "CREATE INDEX IF NOT EXISTS dead_letters_by_order ON dead_letters (group_id, order_id)".into(),
        "CREATE TABLE IF NOT EXISTS inventory_sku (
            sku TEXT PRIMARY KEY, on_hand BIGINT NOT NULL, reserved BIGINT NOT NULL, shipped BIGINT NOT NULL)"
            .into(),
        "CREATE TABLE IF NOT EXISTS inventory_orders (
            order_id TEXT PRIMARY KEY, status TEXT NOT NULL, lines TEXT NOT NULL)"
            .into(),
        "CREATE TABLE IF NOT EXISTS payment_orders (
            order_id TEXT PRIMARY KEY, currency TEXT NOT NULL, order_total_minor BIGINT NOT NULL,
            authorized_minor BIGINT NOT NULL, captured_minor BIGINT NOT NULL, refunded_minor BIGINT NOT NULL,
            status TEXT NOT NULL)"
            .into(),
        "CREATE TABLE IF NOT EXISTS fulfilment_orders (
            order_id TEXT PRIMARY KEY, status TEXT NOT NULL, warehouse TEXT, placed_at_us BIGINT NOT NULL,
            paid_at_us BIGINT, shipped_at_us BIGINT, delivered_at_us BIGINT)"
            .into(),
        format!(
            "{view} inventory_levels AS
             SELECT sku, on_hand, reserved, shipped, on_hand - reserved AS available FROM inventory_sku"
        ),
        format!(
            "{view} order_payments AS
             SELECT order_id, currency, order_total_minor, authorized_minor, captured_minor, refunded_minor, status
             FROM payment_orders"
        ),
        format!(
            "{view} order_fulfilment AS
             SELECT order_id, status, warehouse, {} AS placed_at, {} AS paid_at, {} AS shipped_at, {} AS delivered_at
             FROM fulfilment_orders",
            ts("placed_at_us"),
            ts("paid_at_us"),
            ts("shipped_at_us"),
            ts("delivered_at_us")
        ),
    ];
    if dialect == Dialect::Postgres {
        all.extend(analyst_grants());
    }
    all
}
