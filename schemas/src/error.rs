use thiserror::Error;

// The causes below are kept as their typed errors and shown in the message itself rather
// than as `source()`: the message is what a parked record's `dead_letters.reason` says, and
// a chain printer would otherwise print the cause twice.

/// Why bytes read from the log could not become an [`crate::Event`]. Every variant is a
/// property of the bytes, never of the process: the consumer parks the record and moves on.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// Fewer than the 5 bytes of the Confluent frame header.
    #[error("record of {len} bytes is too short for the 5-byte schema frame")]
    TooShort { len: usize },
    /// The first byte is not the Confluent magic byte 0.
    #[error("wrong magic byte {found:#04x}, expected 0x00")]
    WrongMagicByte { found: u8 },
    /// The frame names a schema id the registry does not know.
    #[error("unknown schema id {id}")]
    UnknownSchemaId { id: u32 },
    /// The registry knows the id, but no record framed with it can be read: its schema is
    /// not Avro, not an orderflow event, or not readable as this reader's newest version.
    #[error("{reason}")]
    UnusableSchema { id: u32, reason: String },
    /// The Avro body does not match its writer schema (truncated, corrupt, too large).
    #[error("avro body does not match schema {subject}: {cause}")]
    InvalidBody { subject: String, cause: apache_avro::Error },
    /// A text field holds a NUL character, which no orderflow text may.
    #[error("{subject}: field {field} holds a NUL character, which no orderflow text may")]
    NulInText { subject: String, field: String },
    /// The Avro body decoded, but bytes were left over: the frame and body disagree.
    #[error("{trailing} trailing bytes after the avro body of {subject}")]
    TrailingBytes { subject: String, trailing: usize },
}

/// Why an event could not be encoded. These are programming or deployment errors (a
/// schema missing from the registry), not bad input.
#[derive(Debug, Error)]
pub enum EncodeError {
    #[error("no schema registered for subject {subject}")]
    NoSchema { subject: String },
    #[error("event does not fit schema {subject}: {cause}")]
    Avro { subject: String, cause: apache_avro::Error },
}

/// Why the schema registry could not be built.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("manifest is not valid JSON: {0}")]
    Manifest(serde_json::Error),
    #[error("manifest names file {file}, which is not embedded")]
    MissingFile { file: String },
    #[error("schema {file} does not parse: {cause}")]
    InvalidSchema { file: String, cause: apache_avro::Error },
    #[error("schema id {id} is assigned twice")]
    DuplicateId { id: u32 },
    #[error("subject {subject} version {version} is listed twice")]
    DuplicateVersion { subject: String, version: u32 },
}
