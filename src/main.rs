//! The orderflow binary: parse arguments, start the runtime, run the command, exit.
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = orderflow::Cli::parse();
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
