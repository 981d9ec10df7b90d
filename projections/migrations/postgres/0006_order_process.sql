-- The order process: one row per order (its state, and its payment timer as `due_at_us`,
-- fired by the member owning `partition_id`).
CREATE TABLE IF NOT EXISTS process_orders (
    order_id TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT, correlation_id TEXT NOT NULL,
    lines TEXT NOT NULL, captured_minor BIGINT NOT NULL, refund_requested_minor BIGINT NOT NULL,
    partition_id BIGINT NOT NULL, due_at_us BIGINT, updated_at_us BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS process_orders_timers ON process_orders (partition_id, due_at_us)
    WHERE due_at_us IS NOT NULL;

-- The stock group: units per SKU, and what each order holds of each SKU.
CREATE TABLE IF NOT EXISTS stock_levels (
    sku TEXT PRIMARY KEY, on_hand BIGINT NOT NULL, reserved BIGINT NOT NULL, shipped BIGINT NOT NULL,
    version BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS stock_holds (
    sku TEXT NOT NULL, order_id TEXT NOT NULL, quantity BIGINT NOT NULL, status TEXT NOT NULL,
    PRIMARY KEY (sku, order_id));

-- Events the processes decided to publish, written with their state and offsets; the relay
-- publishes them in `seq` order and deletes what the broker acknowledged.
CREATE TABLE IF NOT EXISTS outbox (
    seq BIGSERIAL PRIMARY KEY, topic TEXT NOT NULL, record_key TEXT NOT NULL, payload BYTEA NOT NULL,
    published_by TEXT NOT NULL, created_at_ms BIGINT NOT NULL);
