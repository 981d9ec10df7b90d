//! Every non-2xx answer is `{"error": "<code>", "message": "..."}` plus details.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: None }
    }

    pub fn bad_parameter(name: &str, message: impl std::fmt::Display) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "bad_parameter", format!("{name}: {message}"));
        e.details = Some(json!({"parameter": name}));
        e
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }
}

impl From<projections::store::StoreError> for ApiError {
    fn from(e: projections::store::StoreError) -> Self {
        tracing::warn!(error = %e, "query failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the projection database did not answer")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "message": self.message});
        if let (Some(Value::Object(extra)), Some(map)) = (self.details, body.as_object_mut()) {
            map.extend(extra);
        }
        (self.status, Json(body)).into_response()
    }
}
