//! The store's own tests, one test binary: statements, upgrades and deduplication against a
//! real database and nothing else. Each runs on SQLite (a fresh file, no server) and, where
//! `ORDERFLOW_DATABASE_URL` names a PostgreSQL server (`infra/local/up` prints it), on a
//! fresh database there; the PostgreSQL-only ones (the bulk `COPY` path, the parked-order
//! probe) fail without one under CI and are skipped with a notice elsewhere.
#[macro_use]
mod support;

mod bulk_writes;
mod dedupe;
mod handovers;
mod offset_rows;
mod order_locks;
mod parked_orders;
mod schema_upgrade;
