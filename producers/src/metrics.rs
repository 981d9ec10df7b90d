//! Every metric the publisher emits is defined here, once (request metrics are
//! `infra::http`'s).
use std::time::Duration;

pub const PRODUCE_SECONDS: &str = "orderflow_checkout_produce_seconds";
pub const PRODUCES_IN_FLIGHT: &str = "orderflow_checkout_produces_in_flight";

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
