//! The checkout/publishing HTTP API (`orderflow checkout`). Stateless apart from the
//! idempotency records, so any number of instances can run behind a load balancer.
mod accept;
mod api_error;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::idempotency::IdempotencyStore;
use crate::publisher::Publisher;
use crate::requests::{CancelOrderRequest, PaymentRequest, ShipmentRequest};

pub use accept::MAX_BODY_BYTES;

pub(crate) const OPENAPI: &str = include_str!("openapi.json");

pub struct Inner {
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) idempotency: IdempotencyStore,
    pub(crate) prometheus: PrometheusHandle,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Connects the producer and the idempotency store.
    pub async fn connect(
        kafka: &infra::KafkaSettings,
        database_url: &str,
        publisher: crate::publisher::PublisherConfig,
    ) -> Result<Self, crate::CheckoutError> {
        let publisher = Arc::new(Publisher::new(kafka, publisher)?);
        let idempotency = IdempotencyStore::connect(database_url).await?;
        Ok(AppState::new(publisher, idempotency))
    }

    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.0.publisher
    }

    pub fn new(publisher: Arc<Publisher>, idempotency: IdempotencyStore) -> Self {
        AppState(Arc::new(Inner { publisher, idempotency, prometheus: crate::metrics::prometheus() }))
    }
}

/// The router of the publishing API. `with_noop` adds `POST /bench/noop`, the do-nothing
/// endpoint the benchmark measures as the HTTP ceiling.
pub fn router(state: AppState, with_noop: bool) -> Router {
    let mut router = Router::new()
        .route("/orders", post(routes::place_order))
        .route("/orders/{order_id}/cancel", post(routes::order_event::<CancelOrderRequest>))
        .route("/orders/{order_id}/payments", post(routes::order_event::<PaymentRequest>))
        .route("/orders/{order_id}/shipments", post(routes::order_event::<ShipmentRequest>))
        .route("/inventory/{sku}/adjustments", post(routes::adjust_stock))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi));
    if with_noop {
        router = router.route("/bench/noop", post(routes::noop));
    }
    router.fallback(routes::not_found).layer(middleware::from_fn(count_requests)).with_state(state)
}

async fn count_requests(request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    crate::metrics::record_request(&route, response.status().as_u16());
    response
}

/// Serves the API on an already-bound listener until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish and flushes queued produces.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let purge = tokio::spawn(purge_expired_keys(state.idempotency.clone()));
    let app = router(state.clone(), false);
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    purge.abort();
    if let Err(e) = state.publisher.flush(Duration::from_secs(10)).await {
        tracing::warn!(error = %e, "some produces were not acknowledged before shutdown");
    }
    served
}

async fn purge_expired_keys(store: IdempotencyStore) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        match store.purge_expired().await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "forgot expired idempotency keys"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not purge expired idempotency keys"),
        }
    }
}
