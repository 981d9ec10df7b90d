use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConsumerError {
    /// The consumer could not be created or subscribed (bad settings, unknown topic).
    #[error("the Kafka consumer failed")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The projection store refused in a way retrying cannot fix.
    #[error("the projection store failed")]
    Store(#[from] projections::store::StoreError),
    /// The client that reads the log's bounds could not be created.
    #[error("the log-bounds client could not be created")]
    Inspect(#[source] infra::InfraError),
    /// The member's thread could not be started.
    #[error("the member thread could not be started")]
    Spawn(#[source] std::io::Error),
    /// The broker refused this member's credentials or ACLs (for the topic or the group).
    #[error("kafka refused access: {0} (check the SASL user and password and this group's ACLs)")]
    Denied(String),
    /// Applying a batch on the runtime ended without a result (it panicked or the runtime
    /// is shutting down); its transaction did not commit.
    #[error("applying a batch ended abnormally")]
    BatchTask(#[source] tokio::task::JoinError),
    /// The client hit an error librdkafka cannot recover from. Under the consumer group
    /// protocol (KIP-848) that is how a static member started while the broker still
    /// counts a crashed one under its instance id is refused (`UnreleasedInstanceId`).
    #[error("kafka: fatal error {code:?}: {reason}{}", Self::hint(*code))]
    Fatal { code: rdkafka::types::RDKafkaErrorCode, reason: String },
    /// The member's thread ended without reporting how.
    #[error("the member thread ended without a result")]
    Vanished,
}

impl ConsumerError {
    fn hint(code: rdkafka::types::RDKafkaErrorCode) -> &'static str {
        match code {
            rdkafka::types::RDKafkaErrorCode::UnreleasedInstanceId => {
                " (the instance id is still held by a member the broker has not yet timed out: \
                 start again once its session ended, group.consumer.session.timeout.ms under the consumer protocol)"
            }
            _ => "",
        }
    }

    /// Whether starting the member again later may succeed (the broker still counts a
    /// crashed member under this member's instance id).
    pub fn instance_id_held(&self) -> bool {
        matches!(self, ConsumerError::Fatal { code: rdkafka::types::RDKafkaErrorCode::UnreleasedInstanceId, .. })
    }
}
