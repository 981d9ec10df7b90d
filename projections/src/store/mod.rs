//! The SQL side of the projections and processes, one implementation for PostgreSQL and
//! SQLite through sqlx's `Any` driver (and a native PostgreSQL connection for the bulk
//! path); the few differences are in [`Dialect`]. Callers hold a [`Store`] only to take a
//! door from it: [`Batches`] (the member), [`Outbox`] (the relay), [`Reads`] (query API,
//! dashboard, tools), [`Operations`] (the CLI). No caller gets the pool. One file per
//! concern, each importing its siblings, never this index:
//!
//! - `connection`: the pool, session limits, the doors; `roles`: the door types;
//! - `schema`: migrations, generation tables and views (from [`crate::registry`]);
//! - `dispatch`: a group kind turned into typed code (the only `match` on kinds);
//! - `records`: what the store is handed and answers (log records, a batch, its outcome);
//! - `batch`: a batch of log records applied with its offsets in one transaction;
//! - `fold`: decode → apply → merge → write, shared by batches and dead-letter retries;
//! - `offsets`: every statement on the stored offsets;
//! - `process`: the order process's and the stock group's batches, timers and outbox;
//! - `dead_letters`: parking, listing, skipping and retrying records;
//! - `generations`: which generation each group writes and the views show; rebuilds;
//! - `reads`: what the query API, the dashboard and tools read;
//! - `retention`: pruning event ids past the dedupe window and long-resolved dead letters;
//! - `audit`: the operators' actions;
//! - `rows`: how each projection's state maps to a row; `sql`: the statement builder.
mod audit;
mod batch;
mod connection;
mod dead_letters;
mod dispatch;
mod error;
pub mod fault;
mod fold;
mod generations;
mod handovers;
mod offsets;
mod process;
mod reads;
mod records;
mod retention;
mod roles;
mod rows;
pub mod schema;
mod sql;

pub use crate::process::ProcessSettings;
pub use audit::OperatorAction;
pub use batch::DecodedRecords;
pub use connection::{Dialect, SessionLimits, Store};
pub use dead_letters::{DeadLetterRow, DeadLetterSelection, DeadLetterStatus, RetryOutcome};
pub use error::StoreError;
pub use generations::LiveProjection;
pub use offsets::{GroupPartitionOffset, OffsetFault, OffsetMove, StoredPosition};
pub use process::{Adopted, DecisionCount, OrderStatusRow, OutboxRow, Recovered, RelayLease, Restored};
#[cfg(feature = "test-support")]
pub use reads::Snapshot;
pub use reads::{
    rfc3339, CurrencySummary, DailyRevenue, InventoryLevel, OrderView, ReplicaLag, ReservationView, ShopSummary,
    StatusCount, Total,
};
pub use records::{Batch, BatchOutcome, LogRecord};
pub use retention::{Pruned, Retention};
pub use roles::{Batches, Operations, Outbox, Reads};
pub use rows::StoredState;
pub use sql::{Binder, Cell, Columns};
