//! The consumer-group runtime shared by every projection and process.
//!
//! A member ([`member::run_member`]) polls a `BaseConsumer` on a thread of its own and
//! applies each batch to the group's database in one transaction together with the stored
//! offsets, through the store's member door ([`projections::store::Batches`]). Offsets are
//! read from the database on assignment, never from Kafka. A process member's decisions go
//! to the outbox, which the [`relay`](run_relay) publishes through the relay's door
//! ([`projections::store::Outbox`]). See `DESIGN.md`.
mod context;
mod error;
pub mod member;
pub mod metrics;
mod relay;

pub use error::ConsumerError;
pub use member::{GroupProtocol, MemberConfig, MemberHandle, MemberStats};
pub use relay::{run_relay, spawn_relay, RelayConfig, RelayHandle};
