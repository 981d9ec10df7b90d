//! Runtime glue shared by producers and consumers.
//!
//! - [`KafkaSettings`]: bootstrap servers plus any librdkafka setting passed through from
//!   `ORDERFLOW_KAFKA_*` variables, with secrets redacted from `Debug`.
//! - [`topics`]: topic creation through the Kafka admin API.
//! - [`telemetry`]: tracing setup for the binary.
//!
//! `infra/local/` holds the scripts that start a broker and PostgreSQL on loopback.

mod error;
pub mod group_inspect;
mod kafka_settings;
pub mod telemetry;
pub mod topics;

pub use error::InfraError;
pub use kafka_settings::KafkaSettings;
