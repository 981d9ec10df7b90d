-- See the PostgreSQL migration of the same number.
CREATE TABLE IF NOT EXISTS process_orders (
    order_id TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT, correlation_id TEXT NOT NULL,
    lines TEXT NOT NULL, captured_minor BIGINT NOT NULL, refund_requested_minor BIGINT NOT NULL,
    partition_id BIGINT NOT NULL, due_at_us BIGINT, updated_at_us BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS process_orders_timers ON process_orders (partition_id, due_at_us)
    WHERE due_at_us IS NOT NULL;

CREATE TABLE IF NOT EXISTS stock_levels (
    sku TEXT PRIMARY KEY, on_hand BIGINT NOT NULL, reserved BIGINT NOT NULL, shipped BIGINT NOT NULL,
    version BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS stock_holds (
    sku TEXT NOT NULL, order_id TEXT NOT NULL, quantity BIGINT NOT NULL, status TEXT NOT NULL,
    PRIMARY KEY (sku, order_id));

CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, record_key TEXT NOT NULL, payload BLOB NOT NULL,
    published_by TEXT NOT NULL, created_at_ms BIGINT NOT NULL);
