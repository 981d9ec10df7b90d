//! Logging setup for the binary. Libraries only emit `tracing` events; the binary decides
//! where they go.
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Human-readable logs on stderr, filtered by `RUST_LOG` (default `info`), so stdout stays
/// free for command output.
pub fn init() {
    init_with_default("info");
}

/// Like [`init`], with another level when `RUST_LOG` is not set.
pub fn init_with_default(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Installs the process-wide Prometheus recorder once and returns its handle (tests start
/// several services in one process; they share it).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Latency and size histograms share one set of buckets: seconds from 0.5 ms to
            // 10 s, which also covers batch sizes poorly, so sizes use their own metric type.
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 100.0,
                    1000.0, 10000.0,
                ])
                .expect("bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed by an embedding program; our handle
            // still renders what is recorded through it.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
