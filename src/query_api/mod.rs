//! `orderflow serve-api`: the read side over HTTP. Every answer comes from the analyst
//! views, so a rebuild's switch is atomic for it; `after=<partition:offset>` waits until
//! the projections have applied a position the checkout returned (read your writes).
mod api_error;
mod dashboard;
mod params;
mod read_your_writes;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use infra::group_inspect::Inspector;
use projections::store::Store;

pub use api_error::ApiError;

const OPENAPI: &str = include_str!("openapi.json");
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

pub struct Inner {
    pub store: Store,
    pub topic: String,
    /// How long `after=` may wait before answering 503.
    pub read_wait: Duration,
    /// Available below this counts as low stock on the dashboard.
    pub low_stock: i64,
    /// Reads log end offsets for lag; `None` when no broker is configured.
    pub inspector: Option<Arc<Inspector>>,
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
}

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
    pub fn new(store: Store, kafka: &infra::KafkaSettings, topic: &str, read_wait: Duration, low_stock: i64) -> Self {
        let inspector = match Inspector::new(kafka, Duration::from_secs(3)) {
            Ok(i) => Some(Arc::new(i)),
            Err(e) => {
                tracing::warn!(error = %e, "no broker client: the dashboard will show lag without log ends");
                None
            }
        };
        ApiState(Arc::new(Inner {
            store,
            topic: topic.to_string(),
            read_wait,
            low_stock,
            inspector,
            prometheus: infra::telemetry::prometheus(),
        }))
    }
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard.json", get(dashboard::data))
        .route("/orders/{order_id}", get(routes::order))
        .route("/orders/{order_id}/timeline", get(routes::timeline))
        .route("/inventory", get(routes::inventory_list))
        .route("/inventory/{sku}", get(routes::inventory_one))
        .route("/payments/summary", get(routes::payments_summary))
        .route("/fulfilment/backlog", get(routes::fulfilment_backlog))
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi))
        .fallback(routes::not_found)
        .layer(middleware::from_fn(measure))
        .with_state(state)
}

/// Requests and their duration per route template (never the raw path: ids would explode
/// the label set) and status.
async fn measure(request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("orderflow_api_requests_total", "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("orderflow_api_request_seconds", "route" => route).record(started.elapsed().as_secs_f64());
    response
}
