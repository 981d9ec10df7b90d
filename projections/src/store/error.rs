use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    /// The database failed or was unreachable. Retryable: the batch's transaction rolled
    /// back, so nothing was applied and the offsets did not move.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A batch starts above the stored offset for its partition: applying it would skip
    /// records. Fatal for the member: it must not go on.
    #[error("partition {partition}: batch starts at offset {first} but the stored offset is {stored}; refusing to skip records")]
    SkipDetected { partition: i32, stored: i64, first: i64 },
    /// A stored row does not read back (edited by hand, or a newer schema).
    #[error("stored row in {table} is unreadable: {reason}")]
    CorruptRow { table: &'static str, reason: String },
}

impl StoreError {
    /// Whether retrying the same batch may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Database(_))
    }
}
