//! The publishing side of orderflow.
//!
//! - [`checkout`]: the HTTP API services use to append order events (`orderflow checkout`).
//! - [`publisher::Publisher`]: encode, produce idempotently, await the broker's ack.
//! - [`idempotency::IdempotencyStore`]: Idempotency-Key records in SQL.
//! - [`load`]: the load generator driving realistic order lifecycles (`orderflow load`).

pub mod checkout;
mod currency;
mod error;
pub mod idempotency;
pub mod load;
pub mod metrics;
pub mod publisher;
pub mod requests;
pub mod validation;

pub use error::{CheckoutError, IdempotencyError, PublishError};
