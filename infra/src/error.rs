use thiserror::Error;

#[derive(Debug, Error)]
pub enum InfraError {
    /// A configuration value that cannot be used; the message names the setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The broker refused or could not complete an admin request.
    #[error("kafka admin request failed: {0}")]
    Admin(String),
    /// The broker did not answer in time; retrying may help.
    #[error("kafka admin request timed out after {0:?}")]
    AdminTimeout(std::time::Duration),
}
