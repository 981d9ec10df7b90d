//! `orderflow schemas register|check`: the event contract and a Confluent-compatible
//! schema registry (`ORDERFLOW_SCHEMA_REGISTRY_URL`). `register` gives every subject the
//! compatibility rule orderflow's gate enforces (`FULL`: backward and forward) and registers
//! its versions in order; `check` runs the gate over the files and asks the registry whether
//! each subject's newest file may follow what it has.
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use infra::schema_registry::RegistryClient;
use schemas::ContractFile;

#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// Register every schema of the contract, subject by subject in version order, after
    /// setting each subject's compatibility to FULL; prints each subject, version and the
    /// registry's id (registering again finds the same ids).
    Register(RegistryArgs),
    /// Check the contract: each subject's versions against each other (the compatibility
    /// gate CI runs) and its newest version against the registry's latest (its FULL rule).
    /// Exits non-zero if anything is incompatible.
    Check(RegistryArgs),
    /// Print the AsyncAPI 3.1 document of the topics (generated from the contract built
    /// into this binary): every event, its topic and key, who may publish it, its schema.
    Asyncapi {
        #[command(flatten)]
        topic: crate::args::TopicArgs,
    },
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    #[command(flatten)]
    registry: crate::args::SchemaRegistryArgs,
    /// Read the contract from this directory (its manifest.json and the .avsc files it
    /// names) instead of the one built into this binary.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The compatibility rule of every subject: orderflow's gate checks both directions.
const RULE: &str = "FULL";

impl RegistryArgs {
    fn contract(&self) -> anyhow::Result<Vec<ContractFile>> {
        let Some(dir) = &self.dir else { return Ok(schemas::builtin_contract()?) };
        let manifest = std::fs::read_to_string(dir.join("manifest.json"))
            .with_context(|| format!("reading {}", dir.join("manifest.json").display()))?;
        Ok(schemas::contract_from(&manifest, |file| std::fs::read_to_string(dir.join(file)).ok())?)
    }

    fn client(&self) -> anyhow::Result<RegistryClient> {
        self.registry
            .client()?
            .context("which registry? pass --schema-registry-url or set ORDERFLOW_SCHEMA_REGISTRY_URL")
    }
}

/// The contract's files per subject, oldest version first.
fn by_subject(files: Vec<ContractFile>) -> BTreeMap<String, Vec<ContractFile>> {
    let mut subjects: BTreeMap<String, Vec<ContractFile>> = BTreeMap::new();
    for file in files {
        subjects.entry(file.subject.clone()).or_default().push(file);
    }
    for versions in subjects.values_mut() {
        versions.sort_by_key(|f| f.version);
    }
    subjects
}

impl SchemasCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            SchemasCommand::Asyncapi { topic } => {
                println!("{}", serde_json::to_string_pretty(&schemas::asyncapi::document(&topic.topic))?);
                Ok(())
            }
            SchemasCommand::Register(args) => {
                let client = args.client()?;
                for (subject, versions) in by_subject(args.contract()?) {
                    client.set_compatibility(&subject, RULE).await?;
                    for file in versions {
                        let id = client.register(&subject, &file.text).await?;
                        println!("{subject} v{} ({}) → id {id}", file.version, file.file);
                    }
                }
                Ok(())
            }
            SchemasCommand::Check(args) => {
                let files = args.contract()?;
                let local = schemas::ManifestRegistry::from_contract(&files)?;
                let subjects = by_subject(files.clone());
                let mut failures = 0;
                for found in schemas::compatibility::check_registry(&local, subjects.keys().map(String::as_str)) {
                    failures += 1;
                    println!(
                        "{} v{} → v{}: INCOMPATIBLE in the files: {}",
                        found.subject, found.previous_version, found.version, found.reason
                    );
                }
                let client = args.client()?;
                for (subject, versions) in &subjects {
                    let Some(newest) = versions.last() else { continue };
                    match client.check(subject, &newest.text).await? {
                        Ok(()) => {
                            println!("{subject} v{} ({}): compatible with the registry", newest.version, newest.file)
                        }
                        Err(reasons) => {
                            failures += 1;
                            let why =
                                if reasons.is_empty() { "no reason given".to_string() } else { reasons.join("; ") };
                            println!(
                                "{subject} v{} ({}): INCOMPATIBLE with the registry's latest ({RULE}): {why}",
                                newest.version, newest.file
                            );
                        }
                    }
                }
                anyhow::ensure!(failures == 0, "{failures} incompatible schema(s)");
                Ok(())
            }
        }
    }
}
