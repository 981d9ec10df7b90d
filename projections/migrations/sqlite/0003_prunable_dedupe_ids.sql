-- See the PostgreSQL migration of the same number.
ALTER TABLE processed_events ADD COLUMN applied_at_ms BIGINT NOT NULL DEFAULT 0;
UPDATE processed_events SET applied_at_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
CREATE INDEX IF NOT EXISTS processed_events_by_age ON processed_events (applied_at_ms);
CREATE INDEX IF NOT EXISTS dead_letters_by_resolution ON dead_letters (resolved_at_ms) WHERE status <> 'parked';
