-- See the PostgreSQL migration of the same number.
ALTER TABLE consumer_offsets ADD COLUMN last_timestamp_ms BIGINT;
ALTER TABLE offset_faults ADD COLUMN applied_timestamp_ms BIGINT;
ALTER TABLE offset_faults ADD COLUMN found_timestamp_ms BIGINT;
