-- When each event id was claimed, so ids older than the dedupe window can be pruned.
-- Rows from before this migration count as claimed now: nothing inside the window is lost.
ALTER TABLE processed_events ADD COLUMN IF NOT EXISTS applied_at_ms BIGINT;
UPDATE processed_events SET applied_at_ms = CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT) WHERE applied_at_ms IS NULL;
ALTER TABLE processed_events ALTER COLUMN applied_at_ms SET NOT NULL;
CREATE INDEX IF NOT EXISTS processed_events_by_age ON processed_events (applied_at_ms);
CREATE INDEX IF NOT EXISTS dead_letters_by_resolution ON dead_letters (resolved_at_ms) WHERE status <> 'parked';
