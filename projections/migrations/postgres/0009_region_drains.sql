-- Regions whose orders are being handed back (issue 29, failback): while a row is here,
-- every checkout answers writes about the region's orders with 503 and Retry-After, so the
-- old owner's log stops growing for them before the cut.
CREATE TABLE IF NOT EXISTS region_drains (
    region TEXT PRIMARY KEY,
    since_ms BIGINT NOT NULL,
    decided_by TEXT NOT NULL
);

-- How this region's last run ended (issue 29): `orderflow region start` finds `running`
-- when the region stopped without `orderflow region stop` (a crash, a lost machine) and
-- starts it fenced; `orderflow region lift` lifts that fence.
CREATE TABLE IF NOT EXISTS region_runs (
    region TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    since_ms BIGINT NOT NULL
);
