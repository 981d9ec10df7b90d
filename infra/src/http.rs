//! What both HTTP services (the checkout and the query API) share: the error body, request
//! metrics, `/metrics`, `/healthz`, `/openapi.json` and the fallback for unknown routes.
//! A service adds its own routes and calls [`Service::finish`].
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};

/// Every non-2xx answer of both services: a stable machine-readable code, a sentence for
/// people, and details that depend on the code (the invalid `field`, the `parameter`, …).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable code, e.g. `validation_failed`, `not_found`, `not_caught_up`.
    pub error: String,
    pub message: String,
    /// Code-specific details, e.g. `field` or `parameter`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

/// An error answer: status plus [`ErrorBody`].
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// Sent as `Retry-After` (whole seconds, at least 1): when trying again makes sense.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        let body = ErrorBody { error: code.to_string(), message: message.into(), details: Map::new() };
        ApiError { status, body, retry_after: None }
    }

    /// Tells the client when to try again.
    pub fn retry_after(mut self, after: std::time::Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Adds a detail field to the body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.body.details.insert(key.to_string(), value.into());
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn code(&self) -> &str {
        &self.body.error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(after) = self.retry_after {
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response.headers_mut().insert(header::RETRY_AFTER, seconds.max(1).into());
        }
        response
    }
}

/// The names of one service's request metrics (both have their own, so dashboards can
/// tell them apart without a label).
#[derive(Debug, Clone, Copy)]
pub struct RequestMetrics {
    /// Counter, labels `route` (the template, never the raw path: ids would explode the
    /// label set) and `status`.
    pub requests: &'static str,
    /// Histogram of seconds, label `route`.
    pub seconds: &'static str,
}

pub const CHECKOUT_METRICS: RequestMetrics =
    RequestMetrics { requests: "orderflow_checkout_requests_total", seconds: "orderflow_checkout_request_seconds" };
pub const QUERY_API_METRICS: RequestMetrics =
    RequestMetrics { requests: "orderflow_api_requests_total", seconds: "orderflow_api_request_seconds" };

async fn measure(names: RequestMetrics, request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(names.requests, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!(names.seconds, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

/// Prometheus metrics of this process.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics_text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::prometheus().render()).into_response()
}

/// The service is up (it answers); readiness of its dependencies is the service's own route.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or what is wrong.
    pub status: String,
}

/// This service's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)))]
pub async fn openapi_json(doc: std::sync::Arc<str>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.to_string()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json")
}

/// The shared routes and layers around a service's own router.
pub struct Service {
    pub metrics: RequestMetrics,
    /// The service's OpenAPI document, generated from its types.
    pub openapi: utoipa::openapi::OpenApi,
}

impl Service {
    /// Adds `/metrics`, `/openapi.json`, the JSON 404 for unknown routes and the request
    /// metrics to `router`.
    pub fn finish(self, router: Router) -> Router {
        let doc: std::sync::Arc<str> = match serde_json::to_string(&self.openapi) {
            Ok(doc) => doc.into(),
            Err(e) => {
                tracing::error!(error = &e as &dyn std::error::Error, "the OpenAPI document does not serialize");
                "{}".into()
            }
        };
        let names = self.metrics;
        router
            .route("/metrics", get(metrics_text))
            .route("/openapi.json", get(move || openapi_json(doc.clone())))
            .fallback(not_found)
            .layer(middleware::from_fn(move |request, next| measure(names, request, next)))
    }
}

/// A UUID in its hyphenated form only (what OpenAPI's `format: uuid` means); the braced,
/// URN and bare-hex spellings other parsers accept are refused.
pub fn hyphenated_uuid(raw: &str) -> Option<uuid::Uuid> {
    let hyphens = [8, 13, 18, 23];
    let shaped = raw.len() == 36
        && raw.bytes().enumerate().all(|(i, b)| if hyphens.contains(&i) { b == b'-' } else { b.is_ascii_hexdigit() });
    shaped.then(|| uuid::Uuid::parse_str(raw).ok()).flatten()
}

/// Serves `GET /metrics` alone on an already-bound listener until `shutdown` resolves (for
/// processes that serve no API, such as consumer group members).
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(metrics_text));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyphenated_uuids_are_uuids() {
        let id = "0b7a0e6c-3f5e-4d1c-9a3e-2b1f4c5d6e7f";
        assert!(hyphenated_uuid(id).is_some());
        assert!(hyphenated_uuid(&id.to_uppercase()).is_some());
        for bad in ["0b7a0e6c3f5e4d1c9a3e2b1f4c5d6e7f", "{0b7a0e6c-3f5e-4d1c-9a3e-2b1f4c5d6e7f}", "not-a-uuid", ""] {
            assert!(hyphenated_uuid(bad).is_none(), "{bad}");
        }
    }
}
