//! Every metric the checkout emits is defined here, once.
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

pub const REQUESTS: &str = "orderflow_checkout_requests_total";
pub const PRODUCE_SECONDS: &str = "orderflow_checkout_produce_seconds";
pub const PRODUCES_IN_FLIGHT: &str = "orderflow_checkout_produces_in_flight";

/// The process-wide Prometheus handle (shared with the consumers' metrics).
pub fn prometheus() -> PrometheusHandle {
    infra::telemetry::prometheus()
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
