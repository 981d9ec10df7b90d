//! The end-to-end tests of orderflow, one test binary: each module tests one capability
//! against the real broker (Apache Kafka, `ORDERFLOW_BROKERS`) and PostgreSQL
//! (`ORDERFLOW_DATABASE_URL`) that `infra/local/up` starts, or the `orderflow` binary as a
//! child process. One binary links the whole stack once instead of once per file.
mod common;

mod access;
mod analyst_role;
mod checkout_api;
mod checkout_broker_outage;
mod checkout_crash;
mod consumer_crash;
mod consumer_group_churn;
mod consumer_poison;
mod dead_letter_actions;
mod demo_run;
mod deploy_files;
mod kafka_cluster;
mod kafka_sasl;
mod log_roundtrip;
mod offsets_refused;
mod order_process;
mod projections_e2e;
mod query_api;
mod rebuild;
mod rebuild_guard;
mod recovery;
mod regions;
mod replica;
mod retention;
mod schema_registry;
mod takeover;
mod test_databases;
mod tracing;
mod transfers;
