//! The publishing side of orderflow. (The load generator that drives a checkout lives in
//! the root package: it is a client of this crate's HTTP API, not part of it.)
//!
//! - [`checkout`]: the HTTP API services use to append order events (`orderflow checkout`).
//! - [`publisher::Publisher`]: encode, produce idempotently, await the broker's ack.
//! - [`idempotency::IdempotencyStore`]: Idempotency-Key records in SQL.

pub mod checkout;
mod currency;
mod error;
mod group_commit;
pub mod idempotency;
pub mod metrics;
pub mod publisher;
pub mod requests;
pub mod validation;

pub use error::{CheckoutError, IdempotencyError, PublishError};
