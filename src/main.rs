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
    // Spans leave the process only when OTEL_EXPORTER_OTLP_ENDPOINT is set; the guard
    // sends what is buffered when the command ends. Outside the runtime: the exporter's
    // HTTP client is a blocking one, on its own thread.
    let tracing = match infra::trace::init(&cli.service_name()) {
        Ok(tracing) => tracing,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli.run());
    drop(tracing);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
