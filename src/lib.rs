//! The `orderflow` package as a library: every command's arguments and what it does, the
//! query API, the demo and the benchmark harness. `main.rs` only parses arguments, starts
//! the runtime and turns the result into an exit code, so tests drive all of this in
//! process.
pub mod args;
pub mod auth_cmd;
pub mod bench;
pub mod checkout_cmd;
pub mod cli;
pub mod consume_cmd;
pub mod dead_letters_cmd;
pub mod demo;
pub mod failback_cmd;
pub mod groups_cmd;
pub mod kit;
pub mod lifecycle_cmd;
pub mod load;
pub mod migrate_cmd;
pub mod offsets_cmd;
pub mod query_api;
pub mod rebuild_cmd;
pub mod recover_cmd;
pub mod region_cmd;
pub mod region_io;
pub mod schemas_cmd;
pub mod serve_api_cmd;
pub mod topics_cmd;

pub use cli::{shutdown_signal, Cli};
