//! Logging setup for the binary. Libraries only emit `tracing` events; the binary decides
//! where they go.
use tracing_subscriber::EnvFilter;

/// Human-readable logs on stderr, filtered by `RUST_LOG` (default `info`), so stdout stays
/// free for command output.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
