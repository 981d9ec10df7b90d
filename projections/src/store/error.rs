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
    /// Whether retrying the same batch may succeed: the database was unreachable, busy, or
    /// gave up on a lock or a statement (connection errors, serialization failures,
    /// deadlocks, lock and statement timeouts) — anything but a refusal of the data itself.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Database(_)) && !self.refuses_content()
    }

    /// Whether the database refused a value a record carried (PostgreSQL's data exceptions
    /// and integrity violations, SQLSTATE classes 22 and 23; SQLite's constraint, too-big
    /// and mismatch errors). Retrying the same records fails the same way: the record that
    /// carries the value is found and parked instead.
    pub fn refuses_content(&self) -> bool {
        let StoreError::Database(sqlx::Error::Database(e)) = self else { return false };
        e.code().is_some_and(|code| content_code(&code))
    }

    /// Whether a read failed on the data itself rather than on reaching the database: a
    /// value the database cannot compute with (a refusal of content), a row that does not
    /// read back, a column of a type this release does not expect. Asking again fails the
    /// same way.
    pub fn is_about_data(&self) -> bool {
        self.refuses_content()
            || matches!(
                self,
                StoreError::CorruptRow { .. }
                    | StoreError::Database(
                        sqlx::Error::ColumnDecode { .. } | sqlx::Error::ColumnNotFound(_) | sqlx::Error::Decode(_)
                    )
            )
    }
}

/// Whether a database error code says the data was refused.
fn content_code(code: &str) -> bool {
    match code.parse::<u32>() {
        // SQLite result codes: the primary code is the low byte of the extended one.
        Ok(sqlite) if code.len() < 5 => matches!(sqlite & 0xff, 18..=20),
        // SQLSTATE: five characters, the first two the class.
        _ => code.starts_with("22") || code.starts_with("23"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlstate_classes_22_and_23_are_refusals_of_content_and_the_rest_is_transient() {
        // The classification works on codes; a sqlx error carrying one is built by the
        // database driver, so the rule is checked on the code function itself.
        for (code, refused) in [
            ("22021", true),
            ("22P05", true),
            ("23502", true),
            ("40001", false),
            ("55P03", false),
            ("57014", false),
            ("08006", false),
        ] {
            assert_eq!(super::content_code(code), refused, "{code}");
        }
        for (code, refused) in [("2067", true), ("1299", true), ("18", true), ("5", false), ("517", false)] {
            assert_eq!(super::content_code(code), refused, "SQLite {code}");
        }
    }
}
