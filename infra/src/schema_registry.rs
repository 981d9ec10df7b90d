//! A client of a Confluent-compatible schema registry (Confluent Schema Registry, Apicurio
//! Registry's `/apis/ccompat/v7`, Redpanda): register a subject's schema, look a schema up
//! by id, ask whether a schema is compatible with a subject's latest, set a subject's
//! compatibility rule. Every call is bounded by a timeout; a registry that does not answer
//! is [`RegistryError::Unreachable`] (transient), an answer that refuses is
//! [`RegistryError::Refused`] with the registry's words.
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use schemas::{Codec, EventKind};
use serde::Deserialize;
use serde_json::json;
use thiserror::Error;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Debug, Error)]
pub enum RegistryError {
    /// The URL is not one this client can use.
    #[error("schema registry URL {0:?} must start with http:// or https://")]
    BadUrl(String),
    /// No answer (connection refused, timeout): retrying may help.
    #[error("the schema registry at {url} did not answer")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The contract built into this binary cannot be used (a build defect).
    #[error("the built-in contract: {0}")]
    Contract(String),
    /// The registry answered with an error (an incompatible schema: 409; unknown subject).
    #[error("the schema registry refused {what}: {status} {message}")]
    Refused { what: String, status: u16, message: String },
}

impl RegistryError {
    /// Whether retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Refused { status, .. } => *status >= 500,
            RegistryError::BadUrl(_) | RegistryError::Contract(_) => false,
        }
    }
}

#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
    /// HTTP basic credentials (Confluent Cloud's API key and secret, a user of Apicurio).
    credentials: Option<(String, String)>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("RegistryClient")
            .field("base", &self.base)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

#[derive(Deserialize)]
struct Id {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaText {
    schema: String,
}

#[derive(Deserialize)]
struct Compatibility {
    is_compatible: bool,
    #[serde(default)]
    messages: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    #[serde(default)]
    message: String,
}

impl RegistryClient {
    /// A client of the registry API at `base` (e.g. `http://127.0.0.1:8081` or
    /// `http://host/apis/ccompat/v7`).
    pub fn new(base: &str, timeout: Duration) -> Result<Self, RegistryError> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RegistryError::BadUrl(base.to_string()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|source| RegistryError::Unreachable { url: base.to_string(), source })?;
        Ok(RegistryClient { base: base.trim_end_matches('/').to_string(), http, credentials: None })
    }

    /// Sends HTTP basic credentials with every request.
    pub fn with_credentials(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some((user.to_string(), password.to_string()));
        self
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<T>, RegistryError> {
        let unreachable = |source| RegistryError::Unreachable { url: self.base.clone(), source };
        let mut request = request.header(reqwest::header::ACCEPT, CONTENT_TYPE);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorAnswer>(&body)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(500).collect());
            return Err(RegistryError::Refused { what: what.to_string(), status: status.as_u16(), message });
        }
        serde_json::from_slice(&body).map(Some).map_err(|e| RegistryError::Refused {
            what: what.to_string(),
            status: status.as_u16(),
            message: format!("an answer this client cannot read: {e}"),
        })
    }

    fn post(&self, path: &str, body: serde_json::Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body.to_string())
    }

    /// Registers `schema` (Avro JSON text) under `subject`, or finds it registered there
    /// already; returns its id.
    #[tracing::instrument(skip(self, schema))]
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let what = format!("registering {subject}");
        let request = self.post(&format!("/subjects/{subject}/versions"), json!({ "schema": schema }));
        match self.send::<Id>(&what, request).await? {
            Some(id) => Ok(id.id),
            None => Err(RegistryError::Refused { what, status: 404, message: "no such subject".into() }),
        }
    }

    /// The id under which `schema` is registered in `subject`, or `None` if it is not
    /// (or the subject does not exist). Needs only read access to the registry.
    #[tracing::instrument(skip(self, schema))]
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<Option<u32>, RegistryError> {
        let request = self.post(&format!("/subjects/{subject}"), json!({ "schema": schema }));
        Ok(self.send::<Id>(&format!("looking up {subject}"), request).await?.map(|id| id.id))
    }

    /// The schema text registered under `id`, or `None` if the registry knows no such id.
    #[tracing::instrument(skip(self))]
    pub async fn schema(&self, id: u32) -> Result<Option<String>, RegistryError> {
        let request = self.http.get(format!("{}/schemas/ids/{id}", self.base));
        Ok(self.send::<SchemaText>(&format!("schema {id}"), request).await?.map(|s| s.schema))
    }

    /// Whether `schema` may follow the latest version of `subject` under the subject's
    /// rule: `Ok(())`, or the registry's reasons. A subject the registry does not have yet
    /// accepts anything.
    #[tracing::instrument(skip(self, schema))]
    pub async fn check(&self, subject: &str, schema: &str) -> Result<Result<(), Vec<String>>, RegistryError> {
        let path = format!("/compatibility/subjects/{subject}/versions/latest?verbose=true");
        let what = format!("checking {subject}");
        let answer = self.send::<Compatibility>(&what, self.post(&path, json!({ "schema": schema }))).await?;
        Ok(match answer {
            None => Ok(()),
            Some(c) if c.is_compatible => Ok(()),
            Some(c) => Err(c.messages),
        })
    }

    /// Sets `subject`'s compatibility rule (`FULL`: every version readable by the previous
    /// one's readers and able to read its records, the rule orderflow's gate enforces).
    #[tracing::instrument(skip(self))]
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        let request = self
            .http
            .put(format!("{}/config/{subject}", self.base))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(json!({ "compatibility": level }).to_string());
        self.send::<serde_json::Value>(&format!("setting {subject}'s compatibility"), request).await?;
        Ok(())
    }
}

/// Where a service's schema ids come from, and the [`Codec`] that frames and reads with
/// them: the manifest built into the binary, or a schema registry. With a registry, the
/// codec starts knowing the ids of this binary's own schemas and learns any other id a
/// record names through [`Contract::resolve`] before the record is decoded, so decoding
/// itself stays synchronous.
#[derive(Debug, Clone)]
pub struct Contract {
    codec: Codec,
    registry: Option<RegistryClient>,
}

impl Contract {
    /// The ids of the manifest built into this binary; nothing to resolve.
    pub fn embedded() -> Self {
        Contract { codec: Codec::builtin(), registry: None }
    }

    /// Finds this binary's newest schema of every event kind in the registry (looked up,
    /// or registered where the subject does not hold it yet) and frames with those ids.
    #[tracing::instrument(skip_all, fields(registry = %client.url()))]
    pub async fn connect(client: RegistryClient) -> Result<Self, RegistryError> {
        let files = schemas::builtin_contract().map_err(|e| RegistryError::Contract(e.to_string()))?;
        let mut ids = HashMap::new();
        for kind in EventKind::ALL {
            let subject = kind.subject();
            let Some(newest) = files.iter().filter(|f| f.subject == subject).max_by_key(|f| f.version) else {
                continue;
            };
            let id = match client.lookup(&subject, &newest.text).await? {
                Some(id) => id,
                None => {
                    let id = client.register(&subject, &newest.text).await?;
                    tracing::info!(%subject, id, "Registered this binary's schema.");
                    id
                }
            };
            ids.insert(kind, id);
        }
        let codec = Codec::for_registry(&ids).map_err(|e| RegistryError::Contract(e.to_string()))?;
        tracing::info!(registry = %client.url(), "Schema ids come from the registry.");
        Ok(Contract { codec, registry: Some(client) })
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// The registry the ids come from, if any.
    pub fn registry(&self) -> Option<&RegistryClient> {
        self.registry.as_ref()
    }

    /// Learns every schema id that `payloads` name and the codec does not know yet, each
    /// once. An id the registry does not have stays unknown (its records are poison); a
    /// registry that does not answer is an error, and nothing is learned from a failed
    /// call, so the caller can try the same records again. Returns how many ids were
    /// learned.
    pub async fn resolve<'a>(&self, payloads: impl IntoIterator<Item = &'a [u8]>) -> Result<usize, RegistryError> {
        let Some(client) = &self.registry else { return Ok(0) };
        let unknown: BTreeSet<u32> =
            payloads.into_iter().filter_map(Codec::frame_id).filter(|id| !self.codec.knows(*id)).collect();
        let mut learned = 0;
        for id in unknown {
            match client.schema(id).await? {
                Some(text) => {
                    match self.codec.learn(id, &text) {
                        Ok(kind) => tracing::info!(id, ?kind, "Learned a schema id from the registry."),
                        Err(reason) => {
                            tracing::warn!(id, %reason, "The registry's schema cannot be read. Its records are parked.")
                        }
                    }
                    learned += 1;
                }
                None => tracing::warn!(id, "The registry does not know this schema id. Its records are parked."),
            }
        }
        Ok(learned)
    }
}
