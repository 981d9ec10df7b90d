//! The one orderflow binary: parses arguments, builds configuration, calls the crates.
//! Runtime, signals and exit codes live here; the crates stay free of them.
mod bench;
mod checkout_cmd;
mod cli;
mod consume_cmd;
mod dead_letters_cmd;
mod demo;
mod groups_cmd;
mod query_api;
mod rebuild_cmd;
mod serve_api_cmd;
mod topics_cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    infra::telemetry::init_with_default(cli.default_log_level());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
