use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    /// The database failed or was unreachable. Retryable: the batch's transaction rolled
    /// back, so nothing was applied and the offsets did not move.
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// A stored row does not read back (edited by hand, or a newer schema).
    #[error("stored row in {table} is unreadable: {reason}")]
    CorruptRow { table: &'static str, reason: String },
    /// A request the store cannot carry out as asked (unknown projection, live generation).
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether retrying the same batch may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Database(_))
    }
}

// A plain `From` rather than `#[from]`: the cause is already in the message, and marking it
// as the source too would print it twice in an error chain.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}
