use rdkafka::error::KafkaError;
use thiserror::Error;

/// Why an event was not (known to be) appended.
#[derive(Debug, Error)]
pub enum PublishError {
    /// The producer could not be built from the configuration.
    #[error("the producer configuration is not usable")]
    Config(#[source] KafkaError),
    /// The event could not be encoded (a deployment bug: schema missing).
    #[error("the event could not be encoded")]
    Encode(#[source] schemas::EncodeError),
    /// The local producer refused the record before sending it (queue full, too large):
    /// nothing was written.
    #[error("the producer rejected the record")]
    Rejected(#[source] KafkaError),
    /// The broker refused this service's credentials or its write ACL on the topic: nothing
    /// was written, and retrying cannot help until an operator fixes the access.
    #[error("the broker refuses this service's writes")]
    Denied(#[source] KafkaError),
    /// The broker did not acknowledge in time or reported an error: the record may or may
    /// not be in the log. Retrying with the same event id is safe.
    #[error("outcome unknown: {reason}")]
    OutcomeUnknown {
        reason: &'static str,
        #[source]
        source: Option<KafkaError>,
    },
}

/// Why the idempotency store failed. Retryable: the request was not appended.
#[derive(Debug, Error)]
pub enum IdempotencyError {
    #[error("the idempotency store failed")]
    Database(#[from] sqlx::Error),
    /// The grouped statement that carried this request's write failed (every request of
    /// the group gets the one error).
    #[error("the idempotency store failed (a grouped write)")]
    Grouped(#[source] std::sync::Arc<sqlx::Error>),
    /// The task that groups writes is gone (the checkout is stopping).
    #[error("the idempotency store's writer has stopped")]
    WriterStopped,
}

/// Why the checkout could not start.
#[derive(Debug, Error)]
pub enum CheckoutError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    /// The HTTP client that forwards requests to other regions could not be made.
    #[error("the client for forwarding to other regions could not be made")]
    Forwarder(#[source] reqwest::Error),
}
