use thiserror::Error;

/// Why an event was not (known to be) appended.
#[derive(Debug, Error)]
pub enum PublishError {
    /// The producer could not be built from the configuration.
    #[error("producer configuration: {0}")]
    Config(String),
    /// The event could not be encoded (a deployment bug: schema missing).
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The local producer refused the record before sending it (queue full, too large):
    /// nothing was written.
    #[error("producer rejected the record: {0}")]
    Rejected(String),
    /// The broker did not acknowledge in time or reported an error: the record may or may
    /// not be in the log. Retrying with the same event id is safe.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
}

/// Why the idempotency store failed. Retryable: the request was not appended.
#[derive(Debug, Error)]
#[error("idempotency store: {0}")]
pub struct IdempotencyError(pub String);

impl From<sqlx::Error> for IdempotencyError {
    fn from(e: sqlx::Error) -> Self {
        IdempotencyError(e.to_string())
    }
}

/// Why the checkout could not start.
#[derive(Debug, Error)]
pub enum CheckoutError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
}
