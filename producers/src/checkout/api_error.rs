//! The checkout's error answers: the shared body (`infra::http::ErrorBody`) with the codes
//! this service uses. A rejected field names itself in `field`.
use axum::http::StatusCode;
pub use infra::http::ApiError;

use crate::validation::FieldError;

pub fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", message)
}

pub fn outcome_unknown(reason: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "outcome_unknown",
        format!("the event may or may not have been appended ({reason}); retry with the same Idempotency-Key"),
    )
}

pub fn invalid(e: FieldError) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", format!("{}: {}", e.field, e.message))
        .with("field", e.field)
}
