//! Where schema ids come from. The wire format names a schema by a 4-byte id; a registry
//! maps ids to parsed schemas and subjects to their versions.
use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema;
use serde::Deserialize;

use crate::error::RegistryError;

include!(concat!(env!("OUT_DIR"), "/embedded_schemas.rs"));
const MANIFEST: &str = include_str!("../avro/manifest.json");

/// One registered schema, parsed once.
#[derive(Debug, Clone)]
pub struct RegisteredSchema {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: Arc<Schema>,
}

/// Maps schema ids and subjects to schemas. The built-in [`ManifestRegistry`] needs no
/// server; a client of a Confluent-compatible registry can implement the same trait.
pub trait SchemaRegistry: Send + Sync {
    fn by_id(&self, id: u32) -> Option<&RegisteredSchema>;
    /// The newest version of a subject, used for writing and as the reader schema.
    fn latest(&self, subject: &str) -> Option<&RegisteredSchema>;
    /// Every version of a subject, oldest first.
    fn versions(&self, subject: &str) -> Vec<&RegisteredSchema>;
}

#[derive(Deserialize)]
struct ManifestEntry {
    subject: String,
    version: u32,
    id: u32,
    file: String,
}

/// One schema file of the contract as the manifest lists it, with its text (what a schema
/// registry is given: defaults and docs included, which its compatibility rules read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractFile {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub file: String,
    pub text: String,
}

/// The files of the contract this binary was built with, in manifest order.
pub fn builtin_contract() -> Result<Vec<ContractFile>, RegistryError> {
    contract_from(MANIFEST, |file| {
        EMBEDDED_SCHEMAS.iter().find(|(name, _)| *name == file).map(|(_, text)| text.to_string())
    })
}

/// The files a manifest lists, each loaded through `load`.
pub fn contract_from(
    manifest: &str,
    load: impl Fn(&str) -> Option<String>,
) -> Result<Vec<ContractFile>, RegistryError> {
    let entries: Vec<ManifestEntry> = serde_json::from_str(manifest).map_err(RegistryError::Manifest)?;
    entries
        .into_iter()
        .map(|e| {
            let text = load(&e.file).ok_or_else(|| RegistryError::MissingFile { file: e.file.clone() })?;
            Ok(ContractFile { subject: e.subject, version: e.version, id: e.id, file: e.file, text })
        })
        .collect()
}

/// The registry built from the checked-in `avro/manifest.json`.
#[derive(Debug, Clone)]
pub struct ManifestRegistry {
    by_id: HashMap<u32, RegisteredSchema>,
    by_subject: HashMap<String, Vec<u32>>,
}

impl ManifestRegistry {
    /// The registry of the schemas this binary was built with.
    pub fn builtin() -> Result<Self, RegistryError> {
        Self::from_manifest(MANIFEST, |file| {
            EMBEDDED_SCHEMAS.iter().find(|(name, _)| *name == file).map(|(_, text)| text.to_string())
        })
    }

    /// Builds a registry from manifest JSON, loading each named file through `load`.
    pub fn from_manifest(manifest: &str, load: impl Fn(&str) -> Option<String>) -> Result<Self, RegistryError> {
        Self::from_contract(&contract_from(manifest, load)?)
    }

    /// Builds a registry from contract files, parsing each.
    pub fn from_contract(files: &[ContractFile]) -> Result<Self, RegistryError> {
        let mut registry = ManifestRegistry { by_id: HashMap::new(), by_subject: HashMap::new() };
        for file in files {
            let schema = Schema::parse_str(&file.text)
                .map_err(|e| RegistryError::InvalidSchema { file: file.file.clone(), cause: e })?;
            registry.insert(RegisteredSchema {
                subject: file.subject.clone(),
                version: file.version,
                id: file.id,
                schema: Arc::new(schema),
            })?;
        }
        Ok(registry)
    }

    /// Adds a schema; ids and (subject, version) pairs must be unique.
    pub fn insert(&mut self, registered: RegisteredSchema) -> Result<(), RegistryError> {
        if self.by_id.contains_key(&registered.id) {
            return Err(RegistryError::DuplicateId { id: registered.id });
        }
        let known = self.versions(&registered.subject);
        if known.iter().any(|s| s.version == registered.version) {
            return Err(RegistryError::DuplicateVersion {
                subject: registered.subject.clone(),
                version: registered.version,
            });
        }
        let (id, subject) = (registered.id, registered.subject.clone());
        self.by_id.insert(id, registered);
        let ids = self.by_subject.entry(subject).or_default();
        ids.push(id);
        let by_id = &self.by_id;
        ids.sort_by_key(|id| by_id[id].version);
        Ok(())
    }

    /// Every schema, in no particular order.
    pub fn all(&self) -> impl Iterator<Item = &RegisteredSchema> {
        self.by_id.values()
    }

    pub fn subjects(&self) -> impl Iterator<Item = &str> {
        self.by_subject.keys().map(String::as_str)
    }
}

impl SchemaRegistry for ManifestRegistry {
    fn by_id(&self, id: u32) -> Option<&RegisteredSchema> {
        self.by_id.get(&id)
    }

    fn latest(&self, subject: &str) -> Option<&RegisteredSchema> {
        self.by_subject.get(subject)?.last().and_then(|id| self.by_id.get(id))
    }

    fn versions(&self, subject: &str) -> Vec<&RegisteredSchema> {
        self.by_subject
            .get(subject)
            .map(|ids| ids.iter().filter_map(|id| self.by_id.get(id)).collect())
            .unwrap_or_default()
    }
}
