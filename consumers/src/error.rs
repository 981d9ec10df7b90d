use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConsumerError {
    /// The consumer could not be created or subscribed (bad settings, unknown topic).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The projection store refused in a way retrying cannot fix.
    #[error("projection store: {0}")]
    Store(#[from] projections::store::StoreError),
    /// The member's thread could not be started or died.
    #[error("member thread: {0}")]
    Thread(String),
}
