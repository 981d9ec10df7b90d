-- See the PostgreSQL migration of the same number.
CREATE TABLE IF NOT EXISTS offset_faults (
    group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id BIGINT NOT NULL,
    stored_offset BIGINT NOT NULL, log_start BIGINT NOT NULL, log_end BIGINT NOT NULL,
    detected_at_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, topic, partition_id));

CREATE TABLE IF NOT EXISTS offset_resets (
    id INTEGER PRIMARY KEY AUTOINCREMENT, group_id TEXT NOT NULL, topic TEXT NOT NULL,
    partition_id BIGINT NOT NULL, from_offset BIGINT, to_offset BIGINT NOT NULL, target TEXT NOT NULL,
    operator TEXT NOT NULL, reset_at_ms BIGINT NOT NULL);
