-- The timestamp of the last record a group applied per partition: with the offset, a
-- fingerprint of the log, so a recreated topic that has grown past the stored offset is
-- still told apart (the record before the offset is another one).
ALTER TABLE consumer_offsets ADD COLUMN IF NOT EXISTS last_timestamp_ms BIGINT;
ALTER TABLE offset_faults ADD COLUMN IF NOT EXISTS applied_timestamp_ms BIGINT;
ALTER TABLE offset_faults ADD COLUMN IF NOT EXISTS found_timestamp_ms BIGINT;
