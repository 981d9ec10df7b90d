-- See the PostgreSQL migration of the same number.
ALTER TABLE dead_letters ADD COLUMN published_by TEXT;

CREATE TABLE IF NOT EXISTS operator_actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, actor TEXT NOT NULL, action TEXT NOT NULL, arguments TEXT NOT NULL,
    outcome TEXT NOT NULL, at_ms BIGINT NOT NULL);
