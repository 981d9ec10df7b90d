//! The orderflow event contract.
//!
//! - `avro/*.avsc` are the source of truth; `avro/manifest.json` assigns each schema its
//!   subject, version and id ([`ManifestRegistry`]).
//! - [`Event`] is the Rust view of every event of the order lifecycle; each carries an
//!   [`Envelope`].
//! - [`Codec`] writes and reads the Confluent wire format (magic byte 0, 4-byte big-endian
//!   schema id, Avro binary), so any Schema-Registry-aware client can read the log.
//! - [`compatibility`] is the gate that keeps schema changes backward and forward compatible.
//!
//! Nothing here does I/O or depends on Kafka or SQL, so it builds and tests fast.

mod codec;
pub mod compatibility;
mod error;
mod event;
mod registry;
pub mod samples;

pub use codec::{Codec, MAX_DECODE_ALLOCATION_BYTES};
pub use error::{DecodeError, EncodeError, RegistryError};
pub use event::{
    AdjustmentReason, Envelope, Event, EventKind, OrderCancelled, OrderLine, OrderPlaced, PaymentFact, ShipTo,
    ShipmentFact, StockAdjusted,
};
pub use registry::{ManifestRegistry, RegisteredSchema, SchemaRegistry};

/// The topic every order event is appended to (stock adjustments included, keyed by SKU).
pub const ORDERS_TOPIC: &str = "orders";
