//! Every metric the checkout emits is defined here, once.
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "orderflow_checkout_requests_total";
pub const PRODUCE_SECONDS: &str = "orderflow_checkout_produce_seconds";
pub const PRODUCES_IN_FLIGHT: &str = "orderflow_checkout_produces_in_flight";

/// Installs the process-wide Prometheus recorder once and returns its handle (tests start
/// several apps in one process; they share it).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(PRODUCE_SECONDS.into()),
                    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                )
                .expect("bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program's); then our
            // handle renders only what we record through it, which is still correct output.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub fn record_request(route: &str, status: u16) {
    metrics::counter!(REQUESTS, "route" => route.to_string(), "status" => status.to_string()).increment(1);
}

pub fn record_produce_latency(elapsed: Duration) {
    metrics::histogram!(PRODUCE_SECONDS).record(elapsed.as_secs_f64());
}

/// Counts a produce as in flight for as long as the guard lives.
pub struct InFlightProduce(());

impl InFlightProduce {
    pub fn start() -> Self {
        metrics::gauge!(PRODUCES_IN_FLIGHT).increment(1.0);
        InFlightProduce(())
    }
}

impl Drop for InFlightProduce {
    fn drop(&mut self) {
        metrics::gauge!(PRODUCES_IN_FLIGHT).decrement(1.0);
    }
}
