//! The path every publishing request takes: read the body within its limit, check the
//! content type, parse strictly, validate, claim the Idempotency-Key, publish, answer.
//! A request rejected at any step appends nothing.
use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemas::{Envelope, Event};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::api_error::ApiError;
use super::AppState;
use crate::idempotency::Claim;
use crate::validation::FieldError;

pub const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_KEY_LEN: usize = 255;

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

/// What a route makes of a valid body: the event, plus response fields besides
/// `event_id` and `position`.
pub type Built = (Event, Value);

pub async fn accept<T: DeserializeOwned>(
    state: &AppState,
    scope: String,
    headers: &HeaderMap,
    body: Body,
    empty_body: Option<Value>,
    build: impl FnOnce(T, Ids) -> Result<Built, FieldError>,
) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("body exceeds {MAX_BODY_BYTES} bytes"))
    })?;
    let value = match (bytes.is_empty(), empty_body) {
        (true, Some(default)) => default,
        _ => {
            require_json(headers)?;
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| ApiError::malformed(format!("body is not valid JSON: {e}")))?
        }
    };
    if !value.is_object() {
        // serde would read a struct from an array too; the API speaks objects only.
        return Err(FieldError::new("body", "must be a JSON object").into());
    }
    let key = idempotency_key(headers)?;
    let request: T = serde_path_to_error::deserialize(&value).map_err(|e| {
        let field = e.path().to_string();
        ApiError::from(FieldError::new(
            if field == "." { "body".to_string() } else { field },
            e.into_inner().to_string(),
        ))
    })?;
    let ids = derive_ids(&scope, key.as_deref(), headers)?;
    let event_id = ids.envelope.event_id;
    let (event, mut response) = build(request, ids)?;

    let hash = key.as_ref().map(|_| request_hash(&scope, &value));
    if let (Some(key), Some(hash)) = (&key, &hash) {
        match state.idempotency.claim(&scope, key, hash).await.map_err(|e| ApiError::unavailable(e.to_string()))? {
            Claim::Claimed => {}
            Claim::Completed { status, response } => return Ok(replay(status, &response)),
            Claim::InFlight => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "in_flight",
                    "a request with this Idempotency-Key is still being processed",
                ))
            }
            Claim::Mismatch => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request body",
                ))
            }
        }
    }

    match state.publisher.publish(&event).await {
        Ok(position) => {
            response["event_id"] = json!(event_id);
            response["position"] = json!(position);
            // What the query API's `after=` takes, to read this write back.
            response["after"] = json!(format!("{}:{}", position.partition, position.offset));
            if let Some(key) = &key {
                if let Err(e) = state.idempotency.complete(&scope, key, 202, &response.to_string()).await {
                    // The event is in the log; a retry will see the key in flight (409) until
                    // the claim's lease expires, then republish the same event id, which
                    // consumers deduplicate.
                    tracing::warn!(error = %e, "could not record the completed idempotency key");
                }
            }
            Ok((StatusCode::ACCEPTED, Json(response)).into_response())
        }
        Err(e) => {
            tracing::warn!(error = %e, "publish failed");
            if let Some(key) = &key {
                if let Err(e) = state.idempotency.release(&scope, key).await {
                    tracing::warn!(error = %e, "could not release the idempotency key; it frees itself after its lease");
                }
            }
            Err(ApiError::outcome_unknown(&e.to_string()))
        }
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
    let key = raw.to_str().map_err(|_| ApiError::malformed("Idempotency-Key must be visible ASCII"))?;
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::malformed(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_string()))
}

fn uuid_header(headers: &HeaderMap, name: &str) -> Result<Option<Uuid>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| ApiError::malformed(format!("{name} must be a UUID")))
        })
        .transpose()
}

fn derive_ids(scope: &str, key: Option<&str>, headers: &HeaderMap) -> Result<Ids, ApiError> {
    let (event_id, new_order_id) = match key {
        Some(key) => {
            let name = format!("{scope}\n{key}");
            (Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes()), Uuid::new_v5(&ORDER_ID_NAMESPACE, name.as_bytes()))
        }
        None => (Uuid::new_v4(), Uuid::new_v4()),
    };
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
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn replay(status: u16, response: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED);
    let body = serde_json::from_str::<Value>(response).unwrap_or(Value::Null);
    (status, [("idempotent-replay", "true")], Json(body)).into_response()
}
