-- The tables every projection and generation shares (see the PostgreSQL migration of the
-- same number for what each holds). SQLite cannot add a column only if it is missing, so
-- an embedded database from before migrations existed keeps the columns it had; rebuild
-- its projections, or start it afresh: the log holds everything.

CREATE TABLE IF NOT EXISTS consumer_offsets (
    group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id BIGINT NOT NULL,
    next_offset BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, topic, partition_id));

CREATE TABLE IF NOT EXISTS processed_events (
    group_id TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (group_id, event_id));

CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, group_id TEXT NOT NULL, topic TEXT NOT NULL,
    partition_id BIGINT NOT NULL, record_offset BIGINT NOT NULL, record_key TEXT, order_id TEXT,
    reason TEXT NOT NULL, payload BLOB, created_at_ms BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'parked', resolved_at_ms BIGINT,
    UNIQUE (group_id, topic, partition_id, record_offset));
CREATE INDEX IF NOT EXISTS dead_letters_by_order ON dead_letters (group_id, order_id);

CREATE TABLE IF NOT EXISTS projection_live (
    projection TEXT PRIMARY KEY, generation BIGINT NOT NULL, group_id TEXT NOT NULL,
    switched_at_ms BIGINT NOT NULL);

CREATE TABLE IF NOT EXISTS projection_groups (
    group_id TEXT PRIMARY KEY, projection TEXT NOT NULL, generation BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL);

DROP TABLE IF EXISTS group_members;
