//! The checkout's error answers: the shared body (`infra::http::ErrorBody`) with the codes
//! this service uses. A rejected field names itself in `field`.
use axum::http::StatusCode;
pub use infra::http::ApiError;

use crate::validation::FieldError;

pub fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", message)
}

/// The broker did not confirm the append. What the client library said is logged, never
/// sent: it names brokers, topics and settings a caller has no business knowing.
pub fn outcome_unknown() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "outcome_unknown",
        "the broker did not confirm the append, so the event may or may not have been appended; retry with the same Idempotency-Key",
    )
}

/// The idempotency store did not answer; its error is logged, not sent.
pub fn idempotency_unavailable() -> ApiError {
    ApiError::unavailable("the idempotency store did not answer; nothing was appended, retry")
}

pub fn invalid(e: FieldError) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", format!("{}: {}", e.field, e.message))
        .with("field", e.field)
}
