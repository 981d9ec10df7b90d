use thiserror::Error;

#[derive(Debug, Error)]
pub enum InfraError {
    /// A configuration value that cannot be used; the message names the setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The broker refused or could not complete an admin request; `what` says which.
    #[error("kafka: {what} failed")]
    Admin {
        what: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The broker answered an admin request with an error code for one resource.
    #[error("kafka: {what}: {code}")]
    Refused { what: String, code: rdkafka::types::RDKafkaErrorCode },
    /// The broker refused our credentials (SASL, TLS) or our ACLs: retrying cannot help.
    #[error("kafka refused access: {0} (check the SASL user and password, the CA, and this principal's ACLs)")]
    Denied(String),
    /// The broker did not answer in time; retrying may help.
    #[error("kafka admin request timed out after {0:?}")]
    AdminTimeout(std::time::Duration),
}

impl InfraError {
    pub(crate) fn admin(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let what = what.into();
        move |source| InfraError::Admin { what, source }
    }
}

/// An error and all its causes on one line, `outer: inner: innermost`, for answers and
/// messages that are text (logs record the error itself, with its sources).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
