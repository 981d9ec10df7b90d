-- The checkout's Idempotency-Key records, created here too so that one migration by the
-- owner prepares a shared database for every service role (the checkout's role may not
-- create tables). The same shape as `producers/src/idempotency.rs` creates for a
-- checkout with a database of its own; keep the two alike.
CREATE TABLE IF NOT EXISTS checkout_keys (
    scope TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    status INTEGER,
    response TEXT,
    epoch_ms BIGINT NOT NULL,
    lease_until_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, idempotency_key)
);
