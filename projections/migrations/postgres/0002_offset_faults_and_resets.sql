-- Partitions a member refused to consume because the stored offset lies outside the log
-- (beyond its end: the topic was recreated, or the database belongs to another cluster or
-- time; below its start: retention deleted records never projected). Read-your-writes
-- answers 503 for them; `orderflow offsets reset` clears them.
CREATE TABLE IF NOT EXISTS offset_faults (
    group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id BIGINT NOT NULL,
    stored_offset BIGINT NOT NULL, log_start BIGINT NOT NULL, log_end BIGINT NOT NULL,
    detected_at_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, topic, partition_id));

-- Every stored offset an operator moved, and from where.
CREATE TABLE IF NOT EXISTS offset_resets (
    id BIGSERIAL PRIMARY KEY, group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id BIGINT NOT NULL,
    from_offset BIGINT, to_offset BIGINT NOT NULL, target TEXT NOT NULL, operator TEXT NOT NULL,
    reset_at_ms BIGINT NOT NULL);
