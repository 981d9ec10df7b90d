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
//! - [`clock`]: the one wall clock every crate reads.
//!
//! Nothing here does I/O or depends on Kafka or SQL, so it builds and tests fast.

pub mod asyncapi;
pub mod clock;
mod codec;
pub mod compatibility;
mod error;
mod event;
mod names;
mod nul_scan;
mod ownership;
mod region;
mod registry;
pub mod samples;

pub use codec::{Codec, MAX_DECODE_ALLOCATION_BYTES};
pub use error::{DecodeError, EncodeError, RegistryError};
pub use event::{
    AdjustmentReason, Envelope, Event, EventKind, OrderCancelled, OrderConfirmed, OrderExpired, OrderLine, OrderPlaced,
    OrderRejected, PaymentFact, RefundRequested, ShipTo, ShipmentFact, StockAction, StockAdjusted, StockDecided,
    StockOutcome, StockRequested, StockTransfer,
};
pub use names::{
    adjustments_topic, decisions_topic, pipeline_topics, principal_of_header, topic_of, valid_principal_name,
    TopicRole, DECIDING_PRINCIPALS, EVENT_ID_HEADER, MAX_PRINCIPAL_LEN, ORDERS_TOPIC, ORDER_PROCESS_PRINCIPAL,
    PRINCIPAL_HEADER, REQUEST_HEADER, STOCK_PRINCIPAL, TRACE_HEADER,
};
pub use ownership::{control_topic, epoch_of_header, Admit, CutPoint, EarlierCut, Handover, Owners, EPOCH_HEADER};
pub use region::{Region, MAX_REGION_LEN};
pub use registry::{builtin_contract, contract_from, ContractFile, ManifestRegistry, RegisteredSchema, SchemaRegistry};
