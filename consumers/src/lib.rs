//! The consumer-group runtime shared by every projection.
//!
//! A member ([`member::run_member`]) polls a `BaseConsumer` on a thread of its own and
//! applies each batch to the projection's database in one transaction together with the
//! stored offsets ([`projections::store::Store::apply_batch`]). Offsets are read from the
//! database on assignment, never from Kafka. See `DESIGN.md`.
mod context;
mod error;
pub mod member;
pub mod metrics;
mod relay;

pub use error::ConsumerError;
pub use member::{GroupProtocol, MemberConfig, MemberHandle, MemberStats, Work};
pub use relay::{run_relay, spawn_relay, RelayConfig, RelayHandle};
