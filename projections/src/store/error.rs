use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    /// The database failed or was unreachable. Retryable: the batch's transaction rolled
    /// back, so nothing was applied and the offsets did not move.
    #[error("the projection database failed")]
    Database(#[from] sqlx::Error),
    /// The migrations could not be applied (or the database has ones this release lacks).
    #[error("migrating the projection database failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row does not read back (edited by hand, or a newer schema).
    #[error("stored row in {table} is unreadable: {reason}")]
    CorruptRow { table: &'static str, reason: String },
    /// A request the store cannot carry out as asked (a bad group prefix, the live
    /// generation); the message says what to do instead.
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether retrying the same batch may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Database(_))
    }
}
