//! One handler per route of the publishing API. Each turns its body into one event.
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemas::Event;
use serde_json::json;
use uuid::Uuid;

use super::accept::{accept, MAX_BODY_BYTES};
use super::api_error::ApiError;
use super::AppState;
use crate::requests::{OrderCommand, PlaceOrderRequest, StockAdjustmentRequest};
use crate::validation;

fn scope(uri: &Uri) -> String {
    format!("POST {}", uri.path())
}

fn order_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::from(validation::FieldError::new("order_id", "must be a UUID")))
}

pub async fn place_order(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    accept(&state, scope(&uri), &headers, body, None, |request: PlaceOrderRequest, ids| {
        let order_id = ids.new_order_id;
        let placed = request.into_event(ids.envelope, order_id)?;
        Ok((Event::OrderPlaced(placed), json!({ "order_id": order_id })))
    })
    .await
}

/// Cancellations, payments and shipments: an event about an existing order.
pub async fn order_event<T: OrderCommand>(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let order_id = order_id(&raw_id)?;
    let empty_body = T::EMPTY_BODY_OK.then(|| json!({}));
    accept(&state, scope(&uri), &headers, body, empty_body, |request: T, ids| {
        Ok((request.into_event(ids.envelope, order_id)?, json!({ "order_id": order_id })))
    })
    .await
}

pub async fn adjust_stock(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    accept(&state, scope(&uri), &headers, body, None, |request: StockAdjustmentRequest, ids| {
        let response = json!({ "sku": sku });
        Ok((request.into_event(ids.envelope, sku)?, response))
    })
    .await
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.publisher.broker_reachable(std::time::Duration::from_secs(2)).await {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        ApiError::unavailable("the broker does not answer").into_response()
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], state.prometheus.render()).into_response()
}

pub async fn openapi() -> Response {
    ([("content-type", "application/json")], super::OPENAPI).into_response()
}

/// Reads the body like a real route and does nothing else: the benchmark's HTTP ceiling.
pub async fn noop(body: Body) -> Response {
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(_) => (StatusCode::ACCEPTED, Json(json!({}))).into_response(),
        Err(_) => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    }
}

pub async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see /openapi.json").into_response()
}
