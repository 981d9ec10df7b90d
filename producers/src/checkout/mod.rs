//! The checkout/publishing HTTP API (`orderflow checkout`). Stateless apart from the
//! idempotency records, so any number of instances can run behind a load balancer.
mod accept;
mod api_error;
pub mod rebuild;
pub mod regions;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::routes as handler;

use infra::auth::Scope;
use infra::http::{Access, Need, Routes};

use crate::idempotency::IdempotencyStore;
use crate::publisher::Publisher;

pub use accept::{Accepted, Publish, MAX_BODY_BYTES};

/// The checkout's OpenAPI document, generated from the handlers' and bodies' types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow checkout",
        description = "Append order events to the log. Each accepted request becomes exactly one Avro event, keyed by order id."
    ),
    // The service's own paths come from its route list ([`routes`]); these are the
    // shared ones `Routes::finish` mounts.
    paths(infra::http::metrics_text, infra::http::openapi_json),
    components(schemas(infra::http::ErrorBody, Accepted, crate::requests::LineRequest))
)]
pub struct CheckoutApi;

pub struct Inner {
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) idempotency: IdempotencyStore,
    pub(crate) access: Access,
    /// This checkout's region and the others' checkouts; `None` for a single region.
    pub(crate) regions: Option<regions::Regions>,
}

/// The checkout's one list of routes: each handler with who may call it, from which the
/// router, the OpenAPI paths and the guard's access list are made. Each kind of event has
/// its own scope, so a service's token bounds what a leak of it can do.
pub fn routes() -> Routes<AppState> {
    Routes::new(CheckoutApi::openapi())
        .route(Need::Scope(Scope::OrdersWrite), handler!(routes::place_order))
        .route(Need::Scope(Scope::OrdersWrite), handler!(routes::cancel_order))
        .route(Need::Scope(Scope::PaymentsWrite), handler!(routes::report_payment))
        .route(Need::Scope(Scope::ShipmentsWrite), handler!(routes::report_shipment))
        .route(Need::Scope(Scope::InventoryWrite), handler!(routes::adjust_stock))
        .route(Need::Scope(Scope::InventoryWrite), handler!(routes::transfer_stock))
        .route(Need::Scope(Scope::InventoryWrite), handler!(routes::receive_stock))
        .route(Need::Public, handler!(routes::healthz))
        .route(Need::Public, handler!(routes::readyz))
        .route(Need::Authenticated, handler!(routes::asyncapi_json))
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
        access: Access,
    ) -> Result<Self, crate::error::CheckoutError> {
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
        AppState(Arc::new(Inner { publisher, idempotency, access, regions: None }))
    }

    /// The same checkout, as one of several regions.
    pub fn in_region(self, regions: regions::Regions) -> Self {
        self.publisher.follow_ownership(regions.here.clone(), regions.owners());
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|shared| Inner {
            publisher: shared.publisher.clone(),
            idempotency: shared.idempotency.clone(),
            access: shared.access.clone(),
            regions: None,
        });
        AppState(Arc::new(Inner { regions: Some(regions), ..inner }))
    }

    /// The region this checkout serves, if it is one of several.
    pub fn region(&self) -> Option<&schemas::Region> {
        self.regions.as_ref().map(|r| &r.here)
    }
}

/// The router of the publishing API ([`routes`] over `state`, with the shared layers).
pub fn router(state: AppState) -> Router {
    let access = state.access.clone();
    routes().finish(state, infra::http::CHECKOUT_METRICS, access)
}

/// Serves the API on an already-bound listener until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish and flushes queued produces.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let purge = tokio::spawn(purge_expired_keys(state.idempotency.clone()));
    let app = router(state.clone());
    let served =
        infra::serve::serve(listener, app, state.access.limits.connections, state.access.tls.clone(), shutdown).await;
    purge.abort();
    if let Err(e) = state.publisher.flush(Duration::from_secs(10)).await {
        tracing::warn!(
            error = &e as &dyn std::error::Error,
            "Some produces were not acknowledged before shutdown. Their callers were told the outcome is unknown."
        );
    }
    served
}

async fn purge_expired_keys(store: IdempotencyStore) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        match store.purge_expired().await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "Expired idempotency keys forgotten."),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = &e as &dyn std::error::Error,
                "Could not purge expired idempotency keys. Trying again at the next round."
            ),
        }
    }
}
