//! orderflow's projections.
//!
//! - [`model`]: pure `apply(state, event)` logic for inventory, payment and fulfilment.
//! - [`store`]: the SQL side for PostgreSQL and SQLite: migrations, the analyst views, and
//!   [`store::Store::apply_batch`], which applies a batch of log records and advances the
//!   stored offsets in one transaction (exactly-once effects).
pub mod model;
pub mod store;
