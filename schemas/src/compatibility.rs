//! The schema evolution gate. Producers and consumers are deployed independently, so
//! every new version of a subject must be readable by the previous version's readers
//! (forward) and must read the previous version's records (backward).
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;

use crate::registry::SchemaRegistry;

/// A version that breaks compatibility with its predecessor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    pub subject: String,
    pub previous_version: u32,
    pub version: u32,
    pub reason: String,
}

/// Checks that `next` and `previous` can each read what the other wrote.
pub fn check_pair(previous: &Schema, next: &Schema) -> Result<(), String> {
    SchemaCompatibility::can_read(previous, next)
        .map_err(|e| format!("backward: new reader cannot read old data: {e}"))?;
    SchemaCompatibility::can_read(next, previous).map_err(|e| format!("forward: old reader cannot read new data: {e}"))
}

/// Checks every consecutive pair of versions of every given subject.
pub fn check_registry<'a>(
    registry: &dyn SchemaRegistry,
    subjects: impl IntoIterator<Item = &'a str>,
) -> Vec<Incompatibility> {
    let mut found = Vec::new();
    for subject in subjects {
        let versions = registry.versions(subject);
        for pair in versions.windows(2) {
            if let Err(reason) = check_pair(&pair[0].schema, &pair[1].schema) {
                found.push(Incompatibility {
                    subject: subject.to_string(),
                    previous_version: pair[0].version,
                    version: pair[1].version,
                    reason,
                });
            }
        }
    }
    found
}
