use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConsumerError {
    /// The consumer could not be created or subscribed (bad settings, unknown topic).
    #[error("kafka: {0}")]
    Kafka(rdkafka::error::KafkaError),
    /// The projection store refused in a way retrying cannot fix.
    #[error("projection store: {0}")]
    Store(projections::store::StoreError),
    /// The member's thread could not be started or died.
    #[error("member thread: {0}")]
    Thread(String),
}

// Plain `From`s rather than `#[from]`: the cause is already in the message, and marking it as
// the source too would print it twice in an error chain.
impl From<rdkafka::error::KafkaError> for ConsumerError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        ConsumerError::Kafka(e)
    }
}

impl From<projections::store::StoreError> for ConsumerError {
    fn from(e: projections::store::StoreError) -> Self {
        ConsumerError::Store(e)
    }
}
