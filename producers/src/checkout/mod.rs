//! The checkout/publishing HTTP API (`orderflow checkout`). Stateless apart from the
//! idempotency records, so any number of instances can run behind a load balancer.
mod accept;
mod api_error;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use utoipa::OpenApi;

use infra::auth::Scope;
use infra::http::{Access, Need, RouteAccess};

use crate::idempotency::IdempotencyStore;
use crate::publisher::Publisher;

pub use accept::{Accepted, MAX_BODY_BYTES};

/// The checkout's OpenAPI document, generated from the handlers' and bodies' types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow checkout",
        description = "Append order events to the log. Each accepted request becomes exactly one Avro event, keyed by order id."
    ),
    paths(
        routes::place_order,
        routes::cancel_order,
        routes::report_payment,
        routes::report_shipment,
        routes::adjust_stock,
        routes::healthz,
        routes::readyz,
        routes::asyncapi_json,
        infra::http::metrics_text,
        infra::http::openapi_json
    ),
    components(schemas(infra::http::ErrorBody, Accepted, crate::requests::LineRequest))
)]
pub struct CheckoutApi;

pub struct Inner {
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) idempotency: IdempotencyStore,
    pub(crate) access: Access,
}

/// Who may call which route: each kind of event has its own scope, so a service's token
/// bounds what a leak of it can do.
pub const ROUTES: &[RouteAccess] = &[
    RouteAccess::post("/orders", Need::Scope(Scope::OrdersWrite)),
    RouteAccess::post("/orders/{order_id}/cancel", Need::Scope(Scope::OrdersWrite)),
    RouteAccess::post("/orders/{order_id}/payments", Need::Scope(Scope::PaymentsWrite)),
    RouteAccess::post("/orders/{order_id}/shipments", Need::Scope(Scope::ShipmentsWrite)),
    RouteAccess::post("/inventory/{sku}/adjustments", Need::Scope(Scope::InventoryWrite)),
    RouteAccess::post("/bench/noop", Need::Authenticated),
    RouteAccess::get("/healthz", Need::Public),
    RouteAccess::get("/readyz", Need::Public),
    RouteAccess::get("/asyncapi.json", Need::Authenticated),
];

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
        access: Access,
    ) -> Result<Self, crate::CheckoutError> {
        let lease = publisher.deadline + crate::idempotency::LEASE_MARGIN;
        let publisher = Arc::new(Publisher::new(kafka, publisher)?);
        let idempotency = IdempotencyStore::connect(database_url, lease).await?;
        Ok(AppState::new(publisher, idempotency, access))
    }

    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.0.publisher
    }

    pub fn new(publisher: Arc<Publisher>, idempotency: IdempotencyStore, access: Access) -> Self {
        // The recorder must exist before the first request is counted.
        infra::telemetry::prometheus();
        AppState(Arc::new(Inner { publisher, idempotency, access }))
    }
}

/// The router of the publishing API. `with_noop` adds `POST /bench/noop`, the do-nothing
/// endpoint the benchmark measures as the HTTP ceiling.
pub fn router(state: AppState, with_noop: bool) -> Router {
    let mut router = Router::new()
        .route("/orders", post(routes::place_order))
        .route("/orders/{order_id}/cancel", post(routes::cancel_order))
        .route("/orders/{order_id}/payments", post(routes::report_payment))
        .route("/orders/{order_id}/shipments", post(routes::report_shipment))
        .route("/inventory/{sku}/adjustments", post(routes::adjust_stock))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/asyncapi.json", get(routes::asyncapi_json));
    if with_noop {
        router = router.route("/bench/noop", post(routes::noop));
    }
    let service = infra::http::Service {
        metrics: infra::http::CHECKOUT_METRICS,
        openapi: CheckoutApi::openapi(),
        routes: ROUTES,
        access: state.access.clone(),
    };
    service.finish(router.with_state(state))
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
        tracing::warn!(error = &e as &dyn std::error::Error, "some produces were not acknowledged before shutdown");
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
            Err(e) => tracing::warn!(error = &e as &dyn std::error::Error, "could not purge expired idempotency keys"),
        }
    }
}
