-- The tables every projection and generation shares. Databases created before migrations
-- existed already hold some of them, so every statement is idempotent; columns earlier
-- releases lacked are added in place.

-- The next offset to read per (group, topic, partition): the projection's own copy of the
-- consumer position, changed in the same transaction as the projection rows.
CREATE TABLE IF NOT EXISTS consumer_offsets (
    group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id BIGINT NOT NULL,
    next_offset BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, topic, partition_id));

-- Event ids already applied per group: a retried publish that landed twice is applied once.
CREATE TABLE IF NOT EXISTS processed_events (
    group_id TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (group_id, event_id));

-- Records a group could not apply. status: parked (blocks its order), retried (applied
-- later), skipped (given up by an operator).
CREATE TABLE IF NOT EXISTS dead_letters (
    id BIGSERIAL PRIMARY KEY, group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id BIGINT NOT NULL,
    record_offset BIGINT NOT NULL, record_key TEXT, order_id TEXT, reason TEXT NOT NULL,
    payload BYTEA, created_at_ms BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'parked', resolved_at_ms BIGINT,
    UNIQUE (group_id, topic, partition_id, record_offset));
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS status TEXT NOT NULL DEFAULT 'parked';
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS resolved_at_ms BIGINT;
CREATE INDEX IF NOT EXISTS dead_letters_by_order ON dead_letters (group_id, order_id);

-- Which generation (and group) each projection's views show.
CREATE TABLE IF NOT EXISTS projection_live (
    projection TEXT PRIMARY KEY, generation BIGINT NOT NULL, group_id TEXT NOT NULL,
    switched_at_ms BIGINT NOT NULL);

-- Which generation a group writes; groups not listed write generation 1.
CREATE TABLE IF NOT EXISTS projection_groups (
    group_id TEXT PRIMARY KEY, projection TEXT NOT NULL, generation BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL);

-- Members of early releases reported their partitions here; the broker's own group
-- description is the source now.
DROP TABLE IF EXISTS group_members;

-- Payment rows of early releases had no times; they read as placed at the epoch and never
-- captured until the projection is rebuilt from the log.
ALTER TABLE IF EXISTS payment_orders ADD COLUMN IF NOT EXISTS placed_at_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE IF EXISTS payment_orders ADD COLUMN IF NOT EXISTS captured_at_us BIGINT;
