//! The argument groups commands share. Every flag has an `ORDERFLOW_*` environment
//! variable and one default; names are used by scripts and docs, so they change only
//! deliberately. The dispatcher is `cli.rs`; each command's own flags are in its file.
use std::time::Duration;

use anyhow::Context;
use clap::builder::TypedValueParser;
use clap::Args;
use consumers::member::{defaults, MemberConfig};
use projections::registry::GroupKind;

/// Where the Kafka-protocol broker is. Further librdkafka settings (SASL, TLS, tuning)
/// come from `ORDERFLOW_KAFKA_<KEY>` variables, e.g. `ORDERFLOW_KAFKA_SECURITY_PROTOCOL`.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Bootstrap servers, comma separated.
    #[arg(long, env = "ORDERFLOW_BROKERS", default_value = "127.0.0.1:19092")]
    pub brokers: String,
}

impl KafkaArgs {
    pub fn settings(&self) -> anyhow::Result<infra::KafkaSettings> {
        Ok(infra::KafkaSettings::new(&self.brokers).with_env_overrides()?)
    }

    /// The settings, after one round trip that proves the broker accepts them for `topic`:
    /// refused credentials or ACLs end the command with the broker's reason. A broker that
    /// does not answer only warns (clients reconnect; a service may start before it).
    pub async fn checked_settings(&self, topic: Option<&str>) -> anyhow::Result<infra::KafkaSettings> {
        let settings = self.settings()?;
        match infra::access_check::check_access(&settings, topic, ACCESS_CHECK_TIMEOUT).await {
            Ok(()) => {}
            // Refused credentials, or settings no client can be made of: nothing to wait for.
            Err(e @ (infra::InfraError::Denied(_) | infra::InfraError::Admin { .. })) if !matches!(&e, infra::InfraError::Admin { source, .. } if source.rdkafka_error_code().is_some()) => {
                return Err(e.into())
            }
            Err(e) => tracing::warn!(error = &e as &dyn std::error::Error, brokers = %settings.brokers,
                "The broker did not answer the access check. Starting anyway; clients reconnect."),
        }
        Ok(settings)
    }
}

/// Which region this process serves, when the pipeline spans several (each with its own
/// Kafka cluster and database, bridged by MirrorMaker 2). Absent: one region, as before.
#[derive(Debug, Clone, Args)]
pub struct RegionArgs {
    /// This region's name (`eu`, `us`: 1 to 6 lower-case letters or digits): orders
    /// placed here are homed here, and it is the MirrorMaker 2 alias of this region's
    /// cluster, whose copies elsewhere are named `<region>.<topic>`.
    #[arg(long, env = "ORDERFLOW_REGION")]
    pub region: Option<schemas::Region>,
    /// The other regions whose logs MirrorMaker 2 copies into this region's cluster
    /// (comma separated): projections read them too, so every order shows in every region.
    #[arg(long = "mirror-regions", env = "ORDERFLOW_MIRROR_REGIONS", value_delimiter = ',', requires = "region")]
    pub mirrors: Vec<schemas::Region>,
}

impl RegionArgs {
    /// The regions mirrored here, without this one (a shared list of every region may be
    /// given to all of them).
    pub fn mirrors(&self) -> Vec<schemas::Region> {
        let mut mirrors: Vec<_> = self.mirrors.iter().filter(|r| Some(*r) != self.region.as_ref()).cloned().collect();
        mirrors.sort();
        mirrors.dedup();
        mirrors
    }
}

/// How long the start-up access check waits for the broker.
const ACCESS_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may call an HTTP service and how much: the tokens file and/or OIDC, and the abuse
/// limits. With none of the three sources the service refuses to start.
#[derive(Debug, Clone, Args)]
pub struct AccessArgs {
    /// JSON file of service tokens: `[{"principal", "scopes", "token_sha256", "expires_at"?}]`
    /// (`orderflow auth new-token` makes an entry). Read again when it changes, so a token
    /// is revoked by removing its entry; one past its `expires_at` is refused.
    #[arg(long, env = "ORDERFLOW_AUTH_TOKENS_FILE")]
    pub auth_tokens: Option<std::path::PathBuf>,
    /// The identity provider's JWKS: a file path or an https:// URL (plain http only on
    /// loopback). Needs the issuer and audience too.
    #[arg(long, env = "ORDERFLOW_OIDC_JWKS", requires_all = ["oidc_issuer", "oidc_audience"])]
    pub oidc_jwks: Option<String>,
    /// The `iss` access tokens must carry.
    #[arg(long, env = "ORDERFLOW_OIDC_ISSUER", requires = "oidc_jwks")]
    pub oidc_issuer: Option<String>,
    /// The `aud` access tokens must carry.
    #[arg(long, env = "ORDERFLOW_OIDC_AUDIENCE", requires = "oidc_jwks")]
    pub oidc_audience: Option<String>,
    /// Answer everyone, as principal `anonymous` with every scope (local experiments only;
    /// logged at WARN).
    #[arg(long, env = "ORDERFLOW_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Requests per second each principal may make (bursts of one second's worth); 0 is
    /// unlimited.
    #[arg(long, env = "ORDERFLOW_RATE_LIMIT", default_value_t = infra::http::limit_defaults::PER_PRINCIPAL_PER_SECOND)]
    pub rate_limit: u32,
    /// A request unanswered after this is answered 503 [default: 30s].
    #[arg(long, env = "ORDERFLOW_REQUEST_TIMEOUT", value_parser = parse_duration)]
    pub request_timeout: Option<Duration>,
    /// How long a connection may take to send a request's head, or stay idle between
    /// requests, before it is closed [default: 30s].
    #[arg(long, env = "ORDERFLOW_HEADER_TIMEOUT", value_parser = parse_duration)]
    pub header_timeout: Option<Duration>,
    /// Connections open at once; more are closed as they arrive.
    #[arg(long, env = "ORDERFLOW_MAX_CONNECTIONS", default_value_t = infra::serve::connection_defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// How long a request body may take to arrive before it is answered 408 [default: 5s].
    #[arg(long, env = "ORDERFLOW_BODY_TIMEOUT", value_parser = parse_duration)]
    pub body_timeout: Option<Duration>,
    /// Requests served at once; more are answered 503 at once. One principal may hold half
    /// of them; health and readiness checks are answered outside them.
    #[arg(long, env = "ORDERFLOW_MAX_IN_FLIGHT", default_value_t = infra::http::limit_defaults::MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Serve HTTPS with this certificate chain (PEM; the server's certificate first).
    /// Taken up again when it or the key changes.
    #[arg(long, env = "ORDERFLOW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "ORDERFLOW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl AccessArgs {
    pub async fn access(&self) -> anyhow::Result<infra::http::Access> {
        let oidc = match (&self.oidc_jwks, &self.oidc_issuer, &self.oidc_audience) {
            (Some(jwks), Some(issuer), Some(audience)) => Some(infra::auth::OidcConfig {
                jwks: infra::auth::JwksSource::parse(jwks),
                issuer: issuer.clone(),
                audience: audience.clone(),
            }),
            _ => None,
        };
        let config = infra::auth::AuthConfig {
            tokens_file: self.auth_tokens.clone(),
            oidc,
            insecure_no_auth: self.insecure_no_auth,
        };
        let auth = infra::auth::Authenticator::from_config(&config).await?;
        let limits = infra::http::Limits {
            per_principal_per_second: std::num::NonZeroU32::new(self.rate_limit),
            request_timeout: self.request_timeout.unwrap_or(infra::http::limit_defaults::REQUEST_TIMEOUT),
            body_timeout: self.body_timeout.unwrap_or(infra::http::limit_defaults::BODY_TIMEOUT),
            max_body_bytes: infra::http::limit_defaults::MAX_BODY_BYTES,
            connections: infra::serve::ConnectionLimits {
                header_timeout: self.header_timeout.unwrap_or(infra::serve::connection_defaults::HEADER_TIMEOUT),
                max_header_bytes: infra::serve::connection_defaults::MAX_HEADER_BYTES,
                max_connections: self.max_connections,
            },
            max_in_flight: self.max_in_flight,
        };
        let access = infra::http::Access::new(auth, limits);
        Ok(match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let files = infra::tls::TlsFiles { cert: cert.clone(), key: key.clone() };
                access.with_tls(infra::tls::Tls::load(&files)?)
            }
            _ => access,
        })
    }
}

/// A listener of its own for `/metrics`, without authentication: bind it where only the
/// scraper reaches (the pod network, loopback), never on a public address.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, env = "ORDERFLOW_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

impl MetricsArgs {
    /// Starts serving, if asked to; the server stops when the handle is dropped.
    pub async fn spawn(&self) -> anyhow::Result<Option<MetricsServer>> {
        let Some(addr) = &self.metrics_listen else { return Ok(None) };
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        tracing::info!(listen = %listener.local_addr()?, "Serving metrics on /metrics.");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(infra::http::serve_metrics(listener, async {
            let _ = stopped.await;
        }));
        Ok(Some(MetricsServer { _stop: stop }))
    }
}

/// A running metrics listener; dropping it stops it.
pub struct MetricsServer {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Who runs an operator command (dead-letter retry/skip, rebuild, offset reset): recorded
/// in the audit table `operator_actions` with the database role it ran as.
#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    /// Your name for the audit trail [default: the login name, $USER].
    #[arg(long, env = "ORDERFLOW_OPERATOR")]
    pub operator: Option<String>,
}

impl OperatorArgs {
    pub fn name(&self) -> String {
        self.operator.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into())
    }

    /// Runs `action` and records it (ok with `summary` of its result, or failed with the
    /// error) in the audit trail. An action whose record cannot be written still reports
    /// its own outcome, and the failed write is logged.
    pub async fn audited<T>(
        &self,
        store: &projections::store::Store,
        action: &str,
        arguments: serde_json::Value,
        run: impl std::future::Future<Output = anyhow::Result<T>>,
        summary: impl FnOnce(&T) -> serde_json::Value,
    ) -> anyhow::Result<T> {
        let result = run.await;
        let outcome = match &result {
            Ok(value) => format!("ok: {}", summary(value)),
            Err(e) => format!("failed: {e:#}"),
        };
        if let Err(e) = store.operations().record_operator_action(&self.name(), action, &arguments, &outcome).await {
            tracing::error!(
                error = &e as &dyn std::error::Error,
                action,
                "Could not record the action in operator_actions. The audit trail misses it; the action itself ran."
            );
        }
        result
    }
}

/// The SQL database a command works on.
#[derive(Debug, Clone, Args)]
pub struct DatabaseUrlArgs {
    /// `postgres://…` or `sqlite://…` (the default: a file in the working directory).
    #[arg(long, env = "ORDERFLOW_DATABASE_URL", default_value = "sqlite://orderflow.db?mode=rwc")]
    pub database_url: String,
}

/// The projection database, and how consumer groups are named in it.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    #[command(flatten)]
    pub url: DatabaseUrlArgs,
    /// Consumer groups are named `<prefix>-<projection>`; give each deployment sharing a
    /// Kafka cluster its own.
    #[arg(long, env = "ORDERFLOW_GROUP_PREFIX", default_value = projections::registry::DEFAULT_GROUP_PREFIX)]
    pub group_prefix: String,
    /// The region this database serves, when there are several.
    #[command(flatten)]
    pub region: RegionArgs,
}

impl DatabaseArgs {
    /// Connects as a writer (members, rebuilds, operator commands).
    pub async fn connect(&self) -> anyhow::Result<projections::store::Store> {
        self.connect_with(projections::store::SessionLimits::WRITER).await
    }

    pub async fn connect_with(
        &self,
        limits: projections::store::SessionLimits,
    ) -> anyhow::Result<projections::store::Store> {
        use anyhow::Context;
        let store = projections::store::Store::connect_with(&self.url.database_url, limits)
            .await
            .context("connecting to the projection database")?;
        Ok(store.with_group_prefix(&self.group_prefix)?.with_region(self.region.region.as_ref()))
    }
}

/// The topic the order events are on.
#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    #[arg(long, env = "ORDERFLOW_TOPIC", default_value = schemas::ORDERS_TOPIC)]
    pub topic: String,
}

/// Where the log and the projections are: what every read-side command needs.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub topic: TopicArgs,
}

/// Where schema ids come from. Without a URL, the manifest built into this binary (the
/// default: embedded setups need nothing more); with one, a Confluent-compatible registry
/// (Confluent Schema Registry, Apicurio's `/apis/ccompat/v7`, Redpanda), where services
/// publishing straight to Kafka find the contract.
#[derive(Debug, Clone, Args)]
pub struct SchemaRegistryArgs {
    /// The registry's Confluent-compatible API, e.g. http://127.0.0.1:8081 or
    /// http://host:8080/apis/ccompat/v7 (Apicurio).
    #[arg(long, env = "ORDERFLOW_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    /// HTTP basic user for the registry (Confluent Cloud: the API key).
    #[arg(long, env = "ORDERFLOW_SCHEMA_REGISTRY_USER", requires = "schema_registry_url")]
    pub schema_registry_user: Option<String>,
    /// The user's password (Confluent Cloud: the API secret); environment only, so it
    /// never shows in a process list.
    #[arg(skip = std::env::var("ORDERFLOW_SCHEMA_REGISTRY_PASSWORD").ok())]
    pub schema_registry_password: Option<String>,
    /// How long one request to the registry may take.
    #[arg(long, env = "ORDERFLOW_SCHEMA_REGISTRY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub schema_registry_timeout: Duration,
}

impl SchemaRegistryArgs {
    /// A client of the registry, if one is configured.
    pub fn client(&self) -> anyhow::Result<Option<infra::schema_registry::RegistryClient>> {
        let Some(url) = &self.schema_registry_url else { return Ok(None) };
        let client = infra::schema_registry::RegistryClient::new(url, self.schema_registry_timeout)?;
        Ok(Some(match &self.schema_registry_user {
            Some(user) => client.with_credentials(user, self.schema_registry_password.as_deref().unwrap_or_default()),
            None => client,
        }))
    }

    /// The ids to frame and read with: the embedded manifest's, or the registry's. A
    /// registry that does not answer yet is waited for (a service may start before it),
    /// saying so; a refusal (bad credentials, this binary's schema incompatible with the
    /// subject's) ends the command with the registry's words.
    pub async fn contract(&self) -> anyhow::Result<infra::schema_registry::Contract> {
        let Some(client) = self.client()? else { return Ok(infra::schema_registry::Contract::embedded()) };
        let mut backoff = infra::Backoff::new("Looking up this binary's schemas in the registry");
        loop {
            match infra::schema_registry::Contract::connect(client.clone()).await {
                Ok(contract) => {
                    backoff.succeeded("schema registry");
                    return Ok(contract);
                }
                Err(e) if e.is_transient() => tokio::time::sleep(backoff.failed(&e, "schema registry")).await,
                Err(e) => return Err(anyhow::Error::new(e).context("looking up this binary's schemas in the registry")),
            }
        }
    }
}

/// How a consumer group member batches, polls and joins its group. Defaults are
/// `consumers::member::defaults`.
#[derive(Debug, Clone, Args)]
pub struct MemberArgs {
    /// Records per batch at most.
    #[arg(long, env = "ORDERFLOW_BATCH_MAX", default_value_t = defaults::BATCH_MAX,
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub batch_max: usize,
    /// How long a batch may wait to fill.
    #[arg(long, env = "ORDERFLOW_BATCH_WAIT", default_value_t = defaults::BATCH_WAIT.into(), value_parser = duration)]
    pub batch_wait: humantime::Duration,
    /// Consumer group protocol: `classic`, or `consumer` (KIP-848, Kafka 4: the broker
    /// assigns partitions and owns the session timeout, so `--assignment-strategy` and
    /// `--session-timeout` do not apply).
    #[arg(long, env = "ORDERFLOW_GROUP_PROTOCOL", default_value_t = consumers::GroupProtocol::default())]
    pub group_protocol: consumers::GroupProtocol,
    /// range, roundrobin or cooperative-sticky (classic protocol).
    #[arg(long, env = "ORDERFLOW_ASSIGNMENT_STRATEGY", default_value = defaults::ASSIGNMENT_STRATEGY,
          value_parser = clap::builder::PossibleValuesParser::new(defaults::ASSIGNMENT_STRATEGIES))]
    pub assignment_strategy: String,
    #[arg(long, env = "ORDERFLOW_SESSION_TIMEOUT", default_value_t = defaults::SESSION_TIMEOUT.into(), value_parser = duration)]
    pub session_timeout: humantime::Duration,
    #[arg(long, env = "ORDERFLOW_MAX_POLL_INTERVAL", default_value_t = defaults::MAX_POLL_INTERVAL.into(), value_parser = duration)]
    pub max_poll_interval: humantime::Duration,
    /// How long the broker may hold an empty fetch (librdkafka `fetch.wait.max.ms`). Kafka
    /// answers as soon as data arrives, so this bounds only idle fetches.
    #[arg(long, env = "ORDERFLOW_FETCH_WAIT", default_value_t = defaults::FETCH_WAIT.into(), value_parser = duration)]
    pub fetch_wait: humantime::Duration,
    /// Static group membership: a name this member keeps across restarts (a pod's name),
    /// unique in its group. Killed and started again under it, the member takes its
    /// partitions back at once instead of after --session-timeout. A static member that
    /// stops for good holds its partitions until its session expires. Classic protocol
    /// (under `consumer`, the broker refuses the name until the dead member's session
    /// ends, so it gains nothing after a crash).
    #[arg(long, env = "ORDERFLOW_INSTANCE_ID", value_parser = instance_id)]
    pub instance_id: Option<String>,
}

fn instance_id(s: &str) -> Result<String, String> {
    if MemberConfig::valid_instance_id(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not an instance id: 1 to 200 letters, digits, '.', '_' or '-'"))
    }
}

impl MemberArgs {
    /// A member configuration for `kind` (a projection or a process) in a pipeline on
    /// `orders_topic` with these settings.
    pub fn config(&self, kind: impl Into<GroupKind>, orders_topic: &str) -> anyhow::Result<MemberConfig> {
        if *self.session_timeout > *self.max_poll_interval {
            anyhow::bail!("--session-timeout must not exceed --max-poll-interval");
        }
        let mut config = MemberConfig::new(kind, orders_topic);
        config.batch_max = self.batch_max;
        config.batch_wait = *self.batch_wait;
        config.group_protocol = self.group_protocol;
        config.assignment_strategy = self.assignment_strategy.clone();
        config.session_timeout = *self.session_timeout;
        config.max_poll_interval = *self.max_poll_interval;
        config.fetch_wait = *self.fetch_wait;
        config.instance_id = self.instance_id.clone();
        Ok(config)
    }
}

/// Parses a duration like `250ms`, `5s`, `2m`, `1h 30m` (humantime's syntax), or a bare
/// number of seconds.
pub fn duration(s: &str) -> Result<humantime::Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().map(|n| Duration::from_secs(n).into()).map_err(|e| format!("{s:?}: {e}"));
    }
    s.parse::<humantime::Duration>().map_err(|e| format!("{s:?} is not a duration like 500ms, 5s or 2m: {e}"))
}

/// [`duration`] as a `std::time::Duration`, for flags that store one.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    duration(s).map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_reject_garbage() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
    }
}
