-- Who published a parked record (its orderflow-principal header), so a retry records the
-- same publisher in the history as a live apply would.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS published_by TEXT;

-- Every operator action (dead-letter retry/skip, rebuild, offset reset): who, what, when,
-- with which arguments (JSON).
CREATE TABLE IF NOT EXISTS operator_actions (
    id BIGSERIAL PRIMARY KEY, actor TEXT NOT NULL, action TEXT NOT NULL, arguments TEXT NOT NULL,
    outcome TEXT NOT NULL, at_ms BIGINT NOT NULL);
