//! orderflow's projections.
//!
//! - [`model`]: pure `apply(state, event)` logic for inventory, payment, fulfilment and
//!   history.
//! - [`process`]: pure `decide(state, input)` logic of the order process and the stock
//!   group, which decide rather than describe.
//! - [`registry`]: the one list of consumer groups (projections and processes): names,
//!   topics, tables, views, events read.
//! - [`store`]: the SQL side for PostgreSQL and SQLite: migrations, the analyst views, and
//!   one handle per kind of caller ([`store::Batches`] applies a batch of log records and
//!   advances the stored offsets in one transaction, exactly once; [`store::Outbox`],
//!   [`store::Reads`], [`store::Operations`]).

#[macro_use]
mod status;

pub mod model;
pub mod process;
pub mod registry;
pub mod store;

pub use registry::{GroupKind, ProcessKind, ProjectionKind};
