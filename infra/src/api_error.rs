//! The error answer both services give: a status and an [`ErrorBody`], with `Retry-After`
//! when trying again makes sense.
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
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
