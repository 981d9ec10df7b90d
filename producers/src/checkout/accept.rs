//! The path every publishing request takes: read the body within its limit, check the
//! content type, parse strictly, validate, claim the Idempotency-Key, publish, answer.
//! A request rejected at any step appends nothing.
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use infra::auth::Principal;
use schemas::{Envelope, Event};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::api_error::{idempotency_unavailable, invalid, malformed, outcome_unknown, ApiError};
use super::AppState;
use crate::idempotency::{key_digest, Claim, RequestHeader};
use crate::publisher::Position;
use crate::validation::{self, FieldError};

pub const MAX_BODY_BYTES: usize = infra::http::limit_defaults::MAX_BODY_BYTES;
pub const MAX_KEY_LEN: usize = 255;

/// Namespaces for ids derived from an Idempotency-Key: a retry of the same request gets the
/// same event id (consumers deduplicate on it) and, for a new order, the same order id.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7266_4c6f_8000_6576_656e_7431);
const ORDER_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7266_4c6f_8000_6f72_6465_7231);

/// Ids for the event a request produces.
pub struct Ids {
    pub envelope: Envelope,
    /// The id a newly placed order gets.
    pub new_order_id: Uuid,
}

/// What an accepted event is about, echoed in the answer.
pub enum Subject {
    Order(Uuid),
    Sku(String),
}

/// The answer to an accepted request (`202`, and the same body on an idempotent replay).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Accepted {
    pub event_id: Uuid,
    /// Where the event was appended.
    pub position: Position,
    /// `<partition>:<offset>`: what the query API's `after=` takes to read this write back.
    /// In a region, `<region>:<partition>:<offset>:<timestamp ms>:<event id>`: the query
    /// API of any region reads it back (another region finds the record's copy in its
    /// mirror by time and event id, whose offsets differ).
    /// Absent for a stock adjustment: it is on the stock topic and reaches the views through
    /// the stock group's decision, which no position of the orders topic names (read
    /// `/inventory/{sku}` until it shows; an order placed after this answer is decided after
    /// the adjustment whatever the views show).
    #[schema(
        pattern = "^([0-9]+:[0-9]+|[a-z][a-z0-9]{0,5}:[0-9]+:[0-9]+:[0-9]+:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// The order the event is about (placing an order returns its new id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    /// The SKU a stock adjustment is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// The region whose log holds the event, when the checkout is one of several: a retry
    /// of this request names it in the `Orderflow-Region` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl Subject {
    /// What an event the checkout appended is about: a stock adjustment its SKU, anything
    /// else its order.
    pub fn of(event: &Event) -> Option<Subject> {
        match event {
            Event::StockAdjusted(adjusted) => Some(Subject::Sku(adjusted.sku.clone())),
            Event::StockTransferRequested(t) | Event::StockTransferReceived(t) => Some(Subject::Sku(t.sku.clone())),
            other => other.order_id().map(Subject::Order),
        }
    }
}

impl Accepted {
    /// The answer to the request whose event `event_id` was appended at `position`, by the
    /// checkout of `home` (if one of several) on the pipeline of `orders_topic`; the same
    /// answer whether given at once or rebuilt from the record later.
    pub fn new(
        event_id: Uuid,
        position: Position,
        subject: Subject,
        orders_topic: &str,
        home: Option<&schemas::Region>,
    ) -> Self {
        let (order_id, sku) = match subject {
            Subject::Order(id) => (Some(id), None),
            Subject::Sku(sku) => (None, Some(sku)),
        };
        let after = (position.topic == orders_topic).then(|| match home {
            Some(region) => format!(
                "{region}:{}:{}:{}:{event_id}",
                position.partition,
                position.offset,
                position.timestamp_ms.unwrap_or(0)
            ),
            None => format!("{}:{}", position.partition, position.offset),
        });
        Accepted { event_id, position, after, order_id, sku, region: home.map(|r| r.to_string()) }
    }
}

/// What the accept path needs of a request besides the route's own path parameters: who
/// sent it, its scope (`<principal> POST <path>`: an Idempotency-Key is unique within one
/// principal's requests to one path, so two services can never collide on a key; the path
/// with its order id in canonical form, so `/orders/ABC…` and `/orders/abc…` are one
/// path), headers and body.
pub struct Publish {
    pub principal: Arc<Principal>,
    pub scope: String,
    /// The request's path, as sent (a forwarded request goes to the same path).
    pub path: String,
    pub headers: HeaderMap,
    pub body: Body,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Publish {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, _: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        // Put there by the access guard; a route it did not guard has no principal.
        let principal = parts.extensions.get::<Arc<Principal>>().cloned().ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "this route needs a bearer token")
        })?;
        let template = parts.extensions.get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_string());
        let path = canonical_path(template.as_deref(), parts.uri.path());
        let scope = format!("{} POST {path}", principal.name);
        let path = parts.uri.path().to_string();
        Ok(Publish { principal, scope, path, headers: parts.headers, body })
    }
}

/// `path` with each `{order_id}` segment of its route `template` written the one way a
/// UUID is written (lower case): the same order, however the client cased it, is the same
/// idempotency scope. A segment that is no UUID stays as it is (the route refuses it).
pub fn canonical_path(template: Option<&str>, path: &str) -> String {
    let Some(template) = template else { return path.to_string() };
    let (names, values) = (template.split('/'), path.split('/'));
    if template.split('/').count() != path.split('/').count() {
        return path.to_string();
    }
    names
        .zip(values)
        .map(|(name, value)| match name {
            "{order_id}" => crate::validation::hyphenated_uuid(value).map_or(value.to_string(), |id| id.to_string()),
            _ => value.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Accepts a request in this region's log, or forwards it to the region that must write
/// it (`about`: the order it is about; `None` for a new order or a stock adjustment). In a
/// region, every answer names it (`region`).
pub async fn accept<T: DeserializeOwned>(
    state: &AppState,
    request: Publish,
    about: Option<Uuid>,
    empty_body: Option<Value>,
    build: impl Fn(T, Ids) -> Result<(Event, Subject), FieldError>,
) -> Result<Response, ApiError> {
    // Checked whether or not this checkout is one of several: a malformed header is the
    // caller's mistake either way (a single region ignores a well-formed one).
    super::regions::region_header(&request.headers)?;
    let Some(regions) = &state.regions else { return accept_here(state, request, empty_body, build).await };
    if let Some(home) = regions.elsewhere(about.as_ref(), &request.headers)? {
        return regions.forward(&home, &request.path, &request.headers, request.body).await;
    }
    accept_here(state, request, empty_body, build).await.map_err(|e| e.with("region", regions.here.as_str()))
}

async fn accept_here<T: DeserializeOwned>(
    state: &AppState,
    request: Publish,
    empty_body: Option<Value>,
    build: impl Fn(T, Ids) -> Result<(Event, Subject), FieldError>,
) -> Result<Response, ApiError> {
    let Publish { principal, scope, headers, body, .. } = request;
    let value = read_object(body, &headers, empty_body).await?;
    let key = idempotency_key(&headers)?;
    let parse = || {
        serde_path_to_error::deserialize::<_, T>(&value).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { "body".to_string() } else { field };
            invalid(FieldError::new(field, e.into_inner().to_string()))
        })
    };
    // Without a key every request is new; with one, the request is checked first (a
    // refused request claims nothing), then the key is claimed, and its epoch names the ids.
    let home = state.region();
    let ids = derive_ids(&scope, None, &headers, home)?;
    let (mut event, mut subject) = build(parse()?, ids).map_err(invalid)?;
    refuse_non_owner(state, &event, &principal.name).await?;
    let mut request = None;
    if let Some(key) = &key {
        let hash = request_hash(&scope, &value);
        let epoch = match claim(state, &scope, key, &hash).await? {
            Claimed::Go { epoch_ms } => epoch_ms,
            Claimed::Replay(answer) => return Ok(answer),
        };
        let keyed = KeyedRequest { key, hash: &hash, epoch_ms: epoch };
        (event, subject) = build(parse()?, derive_ids(&scope, Some(keyed), &headers, home)?).map_err(invalid)?;
        // What a rebuild of the key store needs to answer a retry after the store is
        // lost: digests and the epoch, never the key.
        request = Some(RequestHeader { key_digest: key_digest(&scope, key), request_hash: hash, epoch_ms: epoch });
    }
    let event_id = event.envelope().event_id;
    if let Event::OrderPlaced(placed) = &event {
        // Before the append, so the owner is known before anyone can learn the order's id.
        let order_id = placed.order_id.to_string();
        state.idempotency.record_owner(&order_id, &principal.name).await.map_err(owner_unavailable)?;
    }

    let request = request.map(|r| r.to_string());
    match state.publisher.publish_with(&event, &principal.name, request.as_deref()).await {
        Ok(position) => {
            let response = Accepted::new(event_id, position, subject, state.publisher.topic(), home);
            if let Some(key) = &key {
                let stored = serde_json::to_string(&response).unwrap_or_default();
                if let Err(e) = state.idempotency.complete(&scope, key, 202, &stored).await {
                    // The event is in the log; a retry will see the key in flight (409) until
                    // the claim's lease expires, then republish the same event id, which
                    // consumers deduplicate.
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "Could not record the completed idempotency key. A retry with it publishes the same event id, which readers drop."
                    );
                }
            }
            Ok((StatusCode::ACCEPTED, Json(response)).into_response())
        }
        Err(e) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "Publishing failed. The caller is told the outcome is unknown and may retry with its key."
            );
            if let Some(key) = &key {
                if let Err(e) = state.idempotency.release(&scope, key).await {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "Could not release the idempotency key. It frees itself after its lease."
                    );
                }
            }
            match e {
                // Known not written: the key is released above, a retry is a new attempt.
                crate::error::PublishError::Denied(_) => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "broker_refused",
                    "the broker refuses this service's writes (its credentials or ACL); nothing was appended",
                )),
                _ => Err(outcome_unknown()),
            }
        }
    }
}

fn owner_unavailable(e: crate::error::IdempotencyError) -> ApiError {
    tracing::warn!(
        error = &e as &dyn std::error::Error,
        "Could not read or record an order's owner. Answering 503; nothing was appended."
    );
    idempotency_unavailable()
}

/// Every order has an owner: the principal that placed it (recorded before its
/// `OrderPlaced` is appended). A cancellation is the owner's alone: another principal's is
/// `403 not_owner`, refused before its Idempotency-Key is claimed, appending nothing. An
/// order this checkout has no owner for (placed straight to Kafka, or before owners were
/// recorded) is left to the consumers. Payments and shipments are their scopes' (the
/// payment provider and the warehouse act on every shop's orders).
async fn refuse_non_owner(state: &AppState, event: &Event, principal: &str) -> Result<(), ApiError> {
    let Event::OrderCancelled(cancelled) = event else { return Ok(()) };
    let owner = state.idempotency.owner_of(&cancelled.order_id.to_string()).await.map_err(owner_unavailable)?;
    match owner {
        Some(owner) if owner != principal => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_owner",
            "only the principal that placed this order may cancel it",
        )),
        _ => Ok(()),
    }
}

/// The body as a JSON object, within its size limit. Where a route takes no body
/// (`empty_body`), none or `null` stands for that default.
async fn read_object(body: Body, headers: &HeaderMap, empty_body: Option<Value>) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("body exceeds {MAX_BODY_BYTES} bytes"))
    })?;
    // Required even of an empty body: a browser sends a cross-site form post without a
    // preflight only with a form content type, so this refuses those whatever they carry.
    require_json(headers)?;
    let value = match (bytes.is_empty(), empty_body) {
        (true, Some(default)) => default,
        (_, empty_body) => {
            let value = crate::validation::strict_json(&bytes)
                .map_err(|e| malformed(format!("body is not valid JSON: {e}")))?;
            match (value, empty_body) {
                (Value::Null, Some(default)) => default,
                (value, _) => value,
            }
        }
    };
    if !value.is_object() {
        // serde would read a struct from an array too; the API speaks objects only.
        return Err(invalid(FieldError::new("body", "must be a JSON object")));
    }
    Ok(value)
}

/// What claiming a key decided.
enum Claimed {
    /// Publish, with ids named by the key's epoch.
    Go { epoch_ms: i64 },
    /// Answer this instead (the first answer, replayed).
    Replay(Response),
}

/// Claims `key` for this request. A key in flight is `409` with `Retry-After` (when its
/// lease ends); a key reused with another body is `422`.
async fn claim(state: &AppState, scope: &str, key: &str, hash: &str) -> Result<Claimed, ApiError> {
    let claim = state.idempotency.claim(scope, key, hash).await;
    let claim = claim.map_err(|e| {
        tracing::warn!(
            error = &e as &dyn std::error::Error,
            "Could not claim the Idempotency-Key. Answering 503; nothing was appended."
        );
        idempotency_unavailable()
    })?;
    match claim {
        Claim::Claimed { epoch_ms } => Ok(Claimed::Go { epoch_ms }),
        Claim::Completed { status, response } => Ok(Claimed::Replay(replay(status, &response))),
        Claim::InFlight { retry_after } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "in_flight",
            "a request with this Idempotency-Key is still being processed",
        )
        .retry_after(retry_after)),
        Claim::Mismatch => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
        )),
    }
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw.to_str().map_err(|_| malformed("Idempotency-Key must be visible ASCII"))?;
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed(format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters")));
    }
    Ok(Some(key.to_string()))
}

fn uuid_header(headers: &HeaderMap, name: &str) -> Result<Option<Uuid>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(validation::hyphenated_uuid)
                .ok_or_else(|| malformed(format!("{name} must be a UUID (8-4-4-4-12 hex digits)")))
        })
        .transpose()
}

/// A request under a claimed Idempotency-Key.
struct KeyedRequest<'a> {
    key: &'a str,
    hash: &'a str,
    /// When the key was first claimed: a key reused after it is forgotten names new ids.
    epoch_ms: i64,
}

/// The ids of the request's event. Under a key they are derived from the scope, the key,
/// its epoch and (for the event id) the body, so every retry of one request carries the
/// same ids and consumers deduplicate it, while nothing else can share them. In a region,
/// a new order's id names it as the order's home ([`schemas::Region`]).
fn derive_ids(
    scope: &str,
    key: Option<KeyedRequest<'_>>,
    headers: &HeaderMap,
    home: Option<&schemas::Region>,
) -> Result<Ids, ApiError> {
    let (event_id, new_order_id) = match key {
        Some(KeyedRequest { key, hash, epoch_ms }) => {
            let request = format!("{scope}\n{key}\n{epoch_ms}");
            let event = format!("{request}\n{hash}");
            (Uuid::new_v5(&EVENT_ID_NAMESPACE, event.as_bytes()), Uuid::new_v5(&ORDER_ID_NAMESPACE, request.as_bytes()))
        }
        None => (Uuid::new_v4(), Uuid::new_v4()),
    };
    let new_order_id = home.map_or(new_order_id, |region| region.order_id(new_order_id.into_bytes()));
    let correlation_id = uuid_header(headers, "x-correlation-id")?.unwrap_or(event_id);
    let causation_id = uuid_header(headers, "x-causation-id")?;
    Ok(Ids {
        envelope: Envelope { event_id, occurred_at: Envelope::now(), correlation_id, causation_id },
        new_order_id,
    })
}

/// A digest of what the request means, not how it was spelled: serde_json's maps are
/// ordered by key, so whitespace and field order do not change it.
fn request_hash(scope: &str, value: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(scope.as_bytes());
    hasher.update([0]);
    hasher.update(value.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

fn replay(status: u16, response: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED);
    let body = serde_json::from_str::<Value>(response).unwrap_or(Value::Null);
    (status, [("idempotent-replay", "true")], Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::canonical_path;

    #[test]
    fn an_order_id_in_any_case_is_one_idempotency_scope_and_skus_keep_their_case() {
        let template = Some("/orders/{order_id}/payments");
        let upper = canonical_path(template, "/orders/5D2C7C0E-8A3B-4C1D-9E2F-0A1B2C3D4E5F/payments");
        let lower = canonical_path(template, "/orders/5d2c7c0e-8a3b-4c1d-9e2f-0a1b2c3d4e5f/payments");
        assert_eq!(upper, lower);
        assert_eq!(
            canonical_path(Some("/inventory/{sku}/adjustments"), "/inventory/Sku-A/adjustments"),
            "/inventory/Sku-A/adjustments"
        );
        assert_eq!(canonical_path(template, "/orders/not-a-uuid/payments"), "/orders/not-a-uuid/payments");
        assert_eq!(canonical_path(None, "/orders/X/payments"), "/orders/X/payments");
    }
}
