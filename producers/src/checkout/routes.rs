//! One handler per route of the publishing API. Each turns its body into one event. The
//! `#[utoipa::path]` on each is its entry in the OpenAPI document: request, headers and
//! every status the route answers.
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use infra::http::{ErrorBody, Health};
use schemas::Event;
use serde::Deserialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, IntoResponses};
use uuid::Uuid;

use super::accept::{accept, Accepted, Publish, Subject, MAX_KEY_LEN};
use super::api_error::{invalid, ApiError};
use super::AppState;
use crate::requests::{
    CancelOrderRequest, OrderCommand, PaymentRequest, PlaceOrderRequest, ShipmentRequest, StockAdjustmentRequest,
    StockReceiptRequest, StockTransferRequest,
};
use crate::validation::{self, FieldError};

fn order_id(raw: &str) -> Result<Uuid, ApiError> {
    validation::hyphenated_uuid(raw).ok_or_else(|| invalid(FieldError::new("order_id", "must be a UUID")))
}

fn idempotency_key_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_KEY_LEN))
        .pattern(Some(format!("^[\\x21-\\x7e]{{1,{MAX_KEY_LEN}}}$")))
        .into()
}

/// The headers every publishing route reads.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // read by `accept` from the raw headers; this type documents them
pub struct PublishHeaders {
    /// Makes retries safe: the same key and body return the first answer and append
    /// nothing (remembered for 24 hours); the same key with another body is refused.
    #[serde(rename = "Idempotency-Key")]
    #[param(schema_with = idempotency_key_schema)]
    idempotency_key: Option<String>,
    /// Carried into the event's envelope; defaults to the event id.
    #[serde(rename = "X-Correlation-Id")]
    #[param(value_type = Uuid, required = false)]
    correlation_id: Option<Uuid>,
    /// The event that caused this one, if any.
    #[serde(rename = "X-Causation-Id")]
    #[param(value_type = Uuid, required = false)]
    causation_id: Option<Uuid>,
    /// On a retry: the `region` the earlier attempt's answer named. A checkout of several
    /// regions sends the request there, so a retry never creates an order in a second
    /// region. (Requests about an order always go to the region its id names.)
    #[serde(rename = "Orderflow-Region")]
    #[param(schema_with = region_schema)]
    region: Option<String>,
}

fn region_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^[a-z][a-z0-9]{{0,{}}}$", schemas::MAX_REGION_LEN - 1)))
        .into()
}

/// The order a request is about.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // parsed strictly by `order_id`; this type documents it
pub struct OrderPath {
    order_id: Uuid,
}

/// Everything a publishing route can answer.
#[derive(IntoResponses)]
#[allow(dead_code)] // the variants document statuses; handlers build the bodies
pub enum PublishResponses {
    /// Appended to the log.
    #[response(status = 202)]
    Accepted(Accepted),
    /// Malformed JSON, a bad Idempotency-Key or a bad header.
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// A request with this Idempotency-Key is still being processed.
    #[response(status = 409)]
    InFlight(ErrorBody),
    /// The body is over 64 KiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// `not_home_region`: another region's checkout forwarded a request that belongs to a
    /// third region; nothing was appended.
    #[response(status = 421)]
    Misdirected(ErrorBody),
    /// The body is not `application/json`.
    #[response(status = 415)]
    NotJson(ErrorBody),
    /// A field is invalid (`field` names it), or the Idempotency-Key was used with another body.
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// The outcome is unknown (broker trouble) or the idempotency store is unavailable:
    /// retry with the same Idempotency-Key. `home_region_unavailable`: the order belongs to
    /// another region (`home_region`) whose checkout cannot be reached; nothing was
    /// appended anywhere.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Place an order: appends `OrderPlaced` under a new order id. A checkout of several
/// regions places it in the region serving `ship_to.country` when one is configured
/// (answered by that region: header `Orderflow-Answered-By`), here otherwise.
#[utoipa::path(post, path = "/orders", tag = "orders", params(PublishHeaders),
    request_body(content = PlaceOrderRequest, content_type = "application/json"),
    responses(PublishResponses))]
pub async fn place_order(State(state): State<AppState>, mut request: Publish) -> Result<Response, ApiError> {
    if let Some(regions) = &state.regions {
        if let Some(answer) = regions.place_by_destination(&mut request).await? {
            return Ok(answer);
        }
    }
    accept(&state, request, None, None, |request: PlaceOrderRequest, ids| {
        let order_id = ids.new_order_id;
        let placed = request.into_event(ids.envelope, order_id)?;
        Ok((Event::OrderPlaced(placed), Subject::Order(order_id)))
    })
    .await
}

/// Cancellations, payments and shipments: an event about an existing order.
async fn order_event<T: OrderCommand>(state: AppState, raw_id: String, request: Publish) -> Result<Response, ApiError> {
    let order_id = order_id(&raw_id)?;
    let empty_body = T::EMPTY_BODY_OK.then(|| serde_json::json!({}));
    accept(&state, request, Some(order_id), empty_body, |request: T, ids| {
        Ok((request.into_event(ids.envelope, order_id)?, Subject::Order(order_id)))
    })
    .await
}

/// The routes of events about an existing order differ only in their path and body.
macro_rules! order_event_route {
    ($(#[doc = $doc:literal])* $name:ident, $path:literal, $documented:ty, $request:ty) => {
        $(#[doc = $doc])*
        #[utoipa::path(post, path = $path, tag = "orders", params(OrderPath, PublishHeaders),
            request_body(content = $documented, content_type = "application/json"),
            responses(PublishResponses))]
        pub async fn $name(
            State(state): State<AppState>,
            Path(raw_id): Path<String>,
            request: Publish,
        ) -> Result<Response, ApiError> {
            order_event::<$request>(state, raw_id, request).await
        }
    };
}

order_event_route!(
    /// Cancel an order (`OrderCancelled`). The body may be left out (or be `null`): a
    /// cancellation without a reason. Only the principal that placed the order may cancel
    /// it: anyone else's cancellation is `403 not_owner`.
    cancel_order, "/orders/{order_id}/cancel", Option<CancelOrderRequest>, CancelOrderRequest
);
order_event_route!(
    /// Report a payment: `PaymentAuthorized`, `PaymentCaptured`, `PaymentFailed` or `PaymentRefunded`.
    report_payment, "/orders/{order_id}/payments", PaymentRequest, PaymentRequest
);
order_event_route!(
    /// Report a shipment step: `ShipmentPacked`, `ShipmentShipped` or `ShipmentDelivered`.
    report_shipment, "/orders/{order_id}/shipments", ShipmentRequest, ShipmentRequest
);

fn sku_param_schema() -> utoipa::openapi::RefOr<Schema> {
    validation::sku_schema()
}

/// The SKU a stock adjustment is about.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // checked by `StockAdjustmentRequest::into_event`; this type documents it
pub struct SkuPath {
    #[param(schema_with = sku_param_schema, required = true)]
    sku: String,
}

/// Adjust a SKU's stock on hand (`StockAdjusted`).
#[utoipa::path(post, path = "/inventory/{sku}/adjustments", tag = "inventory", params(SkuPath, PublishHeaders),
    request_body(content = StockAdjustmentRequest, content_type = "application/json"),
    responses(PublishResponses))]
pub async fn adjust_stock(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    request: Publish,
) -> Result<Response, ApiError> {
    accept(&state, request, None, None, |request: StockAdjustmentRequest, ids| {
        let event = request.into_event(ids.envelope, sku.clone())?;
        Ok((event, Subject::Sku(sku.clone())))
    })
    .await
}

/// A transfer's end in this region: its event, or why there is none (a checkout of one
/// region has no other pool to move units to).
async fn transfer_end<T: serde::de::DeserializeOwned>(
    state: &AppState,
    request: Publish,
    sku: String,
    build: impl Fn(
            T,
            schemas::Envelope,
            String,
            &schemas::Region,
            &dyn Fn(&schemas::Region) -> bool,
        ) -> Result<Event, FieldError>
        + Send
        + Sync,
) -> Result<Response, ApiError> {
    let Some(regions) = &state.regions else {
        // No other pool exists to move units to or from: nothing here to address.
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "no_regions",
            "this checkout serves one region: stock moves between regions' pools only",
        ));
    };
    let known = |r: &schemas::Region| regions.knows(r);
    accept(state, request, None, None, |request: T, ids| {
        let event = build(request, ids.envelope, sku.clone(), &regions.here, &known)?;
        Ok((event, Subject::Sku(sku.clone())))
    })
    .await
}

/// Send units of a SKU from this region's pool to another region's
/// (`StockTransferRequested`). Accepted means appended: this region's stock group then
/// dispatches the units (they leave its pool and are in transit) or refuses the transfer
/// when fewer are available; the decision is a `StockDecided` on the decisions topic.
#[utoipa::path(post, path = "/inventory/{sku}/transfers", tag = "inventory", params(SkuPath, PublishHeaders),
    request_body(content = StockTransferRequest, content_type = "application/json"),
    responses(PublishResponses,
        (status = 404, description = "This checkout serves one region: no pool to move units to or from", body = ErrorBody)))]
pub async fn transfer_stock(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    request: Publish,
) -> Result<Response, ApiError> {
    transfer_end(&state, request, sku, |r: StockTransferRequest, envelope, sku, here, known| {
        r.into_event(envelope, sku, here, known)
    })
    .await
}

/// Report a transfer's units arrived in this region's pool (`StockTransferReceived`):
/// counted in once per transfer id.
#[utoipa::path(post, path = "/inventory/{sku}/transfer-receipts", tag = "inventory", params(SkuPath, PublishHeaders),
    request_body(content = StockReceiptRequest, content_type = "application/json"),
    responses(PublishResponses,
        (status = 404, description = "This checkout serves one region: no pool to move units to or from", body = ErrorBody)))]
pub async fn receive_stock(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    request: Publish,
) -> Result<Response, ApiError> {
    transfer_end(&state, request, sku, |r: StockReceiptRequest, envelope, sku, here, known| {
        r.into_event(envelope, sku, here, known)
    })
    .await
}

/// The AsyncAPI 3.1 document of the topic this checkout writes (generated from the
/// `.avsc` files): every event, its channel and key, who may publish it, its Avro schema.
/// For services that publish straight to Kafka.
#[utoipa::path(get, path = "/asyncapi.json", tag = "operations",
    responses((status = 200, description = "AsyncAPI 3.1", content_type = "application/json", body = Object)))]
pub async fn asyncapi_json(State(state): State<AppState>) -> Response {
    let document = schemas::asyncapi::document(state.publisher.topic()).to_string();
    ([(axum::http::header::CONTENT_TYPE, "application/json")], document).into_response()
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// The broker answers: this instance can accept writes.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, description = "The broker does not answer", body = ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.publisher.broker_reachable(std::time::Duration::from_secs(2)).await {
        Json(Health { status: "ready".into() }).into_response()
    } else {
        ApiError::unavailable("the broker does not answer").into_response()
    }
}
