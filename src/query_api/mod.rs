//! `orderflow serve-api`: the read side over HTTP. Every answer comes from the analyst
//! views, so a rebuild's switch is atomic for it; `after=<partition:offset>` waits until
//! the projections have applied a position the checkout returned (read your writes).
//!
//! [`router`] builds the service over an [`ApiState`], [`run`] serves it until shutdown;
//! tests drive both in process. The OpenAPI document is generated from the handlers'
//! `#[utoipa::path]` attributes and the response types ([`QueryApi`]).
mod dashboard;
mod params;
mod read_your_writes;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use infra::auth::Scope;
use infra::group_inspect::Inspector;
use infra::http::{Access, Need, RouteAccess};
use projections::store::{Store, StoreError};
use tokio::net::TcpListener;
use utoipa::OpenApi;

pub use infra::http::ApiError;

const DASHBOARD_HTML: &str = include_str!("dashboard.html");
const DASHBOARD_JS: &str = include_str!("dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard.css");

/// The query API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow query API",
        description = "Read the projections. Lists are paginated by an opaque `cursor` and `limit`; `after=<partition>:<offset>` (a position the checkout returned) waits until the projections have applied it."
    ),
    paths(
        routes::order,
        routes::timeline,
        routes::inventory_list,
        routes::inventory_one,
        routes::payments_summary,
        routes::fulfilment_backlog,
        routes::healthz,
        dashboard::page,
        dashboard::script,
        dashboard::style,
        dashboard::data,
        infra::http::metrics_text,
        infra::http::openapi_json
    ),
    components(schemas(infra::http::ErrorBody))
)]
pub struct QueryApi;

pub struct Inner {
    pub store: Store,
    pub topic: String,
    /// How long `after=` may wait before answering 503.
    pub read_wait: Duration,
    /// Available below this counts as low stock on the dashboard.
    pub low_stock: i64,
    /// Reads log end offsets for lag; `None` when no broker is configured.
    pub inspector: Option<Arc<Inspector>>,
    pub access: Access,
}

/// Every read needs the `read` scope; the dashboard page itself holds no data (it asks
/// for a token and then reads `/dashboard.json`), so a browser can load it.
pub const ROUTES: &[RouteAccess] = &[
    RouteAccess::get("/", Need::Public),
    RouteAccess::get("/dashboard.js", Need::Public),
    RouteAccess::get("/dashboard.css", Need::Public),
    RouteAccess::get("/dashboard.json", Need::Scope(Scope::Read)),
    RouteAccess::get("/orders/{order_id}", Need::Scope(Scope::Read)),
    RouteAccess::get("/orders/{order_id}/timeline", Need::Scope(Scope::Read)),
    RouteAccess::get("/inventory", Need::Scope(Scope::Read)),
    RouteAccess::get("/inventory/{sku}", Need::Scope(Scope::Read)),
    RouteAccess::get("/payments/summary", Need::Scope(Scope::Read)),
    RouteAccess::get("/fulfilment/backlog", Need::Scope(Scope::Read)),
    RouteAccess::get("/healthz", Need::Public),
];

#[derive(Clone)]
pub struct ApiState(pub Arc<Inner>);

impl std::ops::Deref for ApiState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl ApiState {
    /// Shared state for the API over `store`; log ends (for lag) come from `kafka` if it
    /// can be reached.
    pub fn new(
        store: Store,
        kafka: &infra::KafkaSettings,
        topic: &str,
        read_wait: Duration,
        low_stock: i64,
        access: Access,
    ) -> Self {
        let inspector = match Inspector::new(kafka, Duration::from_secs(3)) {
            Ok(i) => Some(Arc::new(i)),
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "no broker client: the dashboard will show lag without log ends"
                );
                None
            }
        };
        // The recorder must exist before the first request is counted.
        infra::telemetry::prometheus();
        ApiState(Arc::new(Inner { store, topic: topic.to_string(), read_wait, low_stock, inspector, access }))
    }
}

pub fn router(state: ApiState) -> Router {
    let router = Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .route("/dashboard.json", get(dashboard::data))
        .route("/orders/{order_id}", get(routes::order))
        .route("/orders/{order_id}/timeline", get(routes::timeline))
        .route("/inventory", get(routes::inventory_list))
        .route("/inventory/{sku}", get(routes::inventory_one))
        .route("/payments/summary", get(routes::payments_summary))
        .route("/fulfilment/backlog", get(routes::fulfilment_backlog))
        .route("/healthz", get(routes::healthz))
        .with_state(state.clone());
    let service = infra::http::Service {
        metrics: infra::http::QUERY_API_METRICS,
        openapi: QueryApi::openapi(),
        routes: ROUTES,
        access: state.access.clone(),
    };
    service.finish(router)
}

/// Serves the API on an already-bound listener until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

/// A read that failed in the database is a 503: the client may retry.
fn unavailable(e: StoreError) -> ApiError {
    tracing::warn!(error = &e as &dyn std::error::Error, "query failed");
    ApiError::unavailable("the projection database did not answer")
}
