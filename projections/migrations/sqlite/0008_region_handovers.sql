-- Who writes each region's orders (issue 29): one row per handover (takeover, failback),
-- the newest epoch per region wins. `handover` is the record as appended to the control
-- topic (JSON: region, owner, epoch, cut, who decided and why).
CREATE TABLE IF NOT EXISTS region_handovers (
    region TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    owner TEXT NOT NULL,
    handover TEXT NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    PRIMARY KEY (region, epoch)
);

-- The ownership epoch a decision is published under (its record's orderflow-epoch
-- header): above 1 for decisions about the orders of a region this one took over.
ALTER TABLE outbox ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1;
