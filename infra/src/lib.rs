//! Runtime glue shared by producers and consumers.
//!
//! - [`KafkaSettings`]: bootstrap servers plus any librdkafka setting passed through from
//!   `ORDERFLOW_KAFKA_*` variables, with secrets redacted from `Debug`.
//! - [`backoff`]: the one retry policy and its logging rule.
//! - [`KafkaSettings::idempotent_producer`]: the settings of every producer that must not
//!   lose or double a record.
//! - [`topics`]: topic creation through the Kafka admin API.
//! - [`telemetry`]: tracing setup for the binary and the process-wide metrics recorder.
//! - [`auth`]: who a caller is (static tokens, OIDC JWTs) and what it may do.
//! - [`http`]: what both HTTP services share: error body, request metrics, `/metrics`,
//!   `/openapi.json`.
//!
//! `infra/local/` holds the scripts that start a broker and PostgreSQL on loopback.

pub mod access_check;
pub mod acls;
pub mod admission;
mod api_error;
pub mod auth;
pub mod backoff;
mod error;
pub mod fence;
pub mod group_inspect;
pub mod http;
mod kafka_settings;
pub mod log_reader;
pub mod schema_registry;
pub mod serve;
pub mod telemetry;
pub mod tls;
pub mod topics;
pub mod trace;
pub mod watch;

pub use backoff::Backoff;
pub use error::{error_chain, InfraError};
pub use kafka_settings::{passthrough_from, KafkaSettings};
