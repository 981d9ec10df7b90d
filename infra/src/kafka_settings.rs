//! Kafka client settings. The code never hard-codes a broker flavour: pointing orderflow
//! at Apache Kafka, Redpanda or a managed service means changing the bootstrap servers and
//! passing client settings (SASL, TLS, tuning) through the environment.
use std::fmt;

use rdkafka::ClientConfig;

use crate::error::InfraError;

const PASSTHROUGH_PREFIX: &str = "ORDERFLOW_KAFKA_";

/// Bootstrap servers plus librdkafka settings passed through verbatim.
#[derive(Clone, Default)]
pub struct KafkaSettings {
    pub brokers: String,
    /// (librdkafka key, value) pairs; applied after orderflow's own defaults, so an
    /// operator can override any of them.
    pub overrides: Vec<(String, String)>,
}

impl KafkaSettings {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSettings { brokers: brokers.into(), overrides: Vec::new() }
    }

    /// Reads `ORDERFLOW_KAFKA_<KEY>` variables from the process environment, where
    /// `<KEY>` is the librdkafka key upper-cased with dots as underscores:
    /// `ORDERFLOW_KAFKA_SASL_MECHANISMS=PLAIN` sets `sasl.mechanisms`. A double underscore
    /// stands for a literal underscore.
    pub fn with_env_overrides(mut self) -> Result<Self, InfraError> {
        self.overrides.extend(passthrough_from(std::env::vars())?);
        Ok(self)
    }

    /// A client config with the bootstrap servers and every override applied.
    pub fn client_config(&self) -> ClientConfig {
        self.client_config_with(&[])
    }

    /// A client config with orderflow's `defaults` for one kind of client, then the
    /// operator's overrides on top.
    pub fn client_config_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.overrides {
            config.set(key, value);
        }
        config
    }

    /// A producer that never loses or doubles a record it was handed: idempotent, every
    /// in-sync replica acknowledges, LZ4 batches lingering `linger` for company, and
    /// librdkafka giving up after `message_timeout` (the caller's deadline plus margin:
    /// a record reported failed may still be written, which is why every record's event
    /// id is derived from its cause). Every producer of the log takes these.
    pub fn idempotent_producer(
        &self,
        message_timeout: std::time::Duration,
        linger: std::time::Duration,
    ) -> ClientConfig {
        let timeout = message_timeout.as_millis().to_string();
        let linger = linger.as_millis().to_string();
        self.client_config_with(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("message.timeout.ms", &timeout),
            ("linger.ms", &linger),
            ("compression.type", "lz4"),
            // Partitions added to a topic are written to within seconds, not librdkafka's
            // default 5 minutes (the consumers look as often).
            ("topic.metadata.refresh.interval.ms", "10000"),
        ])
    }
}

/// Extracts librdkafka settings from environment variables.
pub fn passthrough_from(vars: impl IntoIterator<Item = (String, String)>) -> Result<Vec<(String, String)>, InfraError> {
    let mut settings = Vec::new();
    for (name, value) in vars {
        let Some(raw) = name.strip_prefix(PASSTHROUGH_PREFIX) else {
            continue;
        };
        if raw.is_empty() || !raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(InfraError::Config(format!("{name} is not a valid librdkafka setting name")));
        }
        let key = raw.to_ascii_lowercase().replace("__", "\u{0}").replace('_', ".").replace('\u{0}', "_");
        settings.push((key, value));
    }
    settings.sort();
    Ok(settings)
}

/// Whether a librdkafka key holds a secret that must never be printed.
fn is_secret(key: &str) -> bool {
    ["password", "secret", "key.pem", "token", "sasl.jaas"].iter().any(|word| key.contains(word))
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<(&str, &str)> = self
            .overrides
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "<redacted>" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaSettings").field("brokers", &self.brokers).field("overrides", &shown).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn env_names_map_to_librdkafka_keys() {
        let got = passthrough_from(vars(&[
            ("ORDERFLOW_KAFKA_SASL_MECHANISMS", "PLAIN"),
            ("ORDERFLOW_KAFKA_LINGER_MS", "5"),
            ("ORDERFLOW_KAFKA_SOME__ODD_KEY", "x"),
            ("ORDERFLOW_BROKERS", "ignored"),
            ("PATH", "/bin"),
        ]))
        .expect("valid");
        assert_eq!(got, vars(&[("linger.ms", "5"), ("sasl.mechanisms", "PLAIN"), ("some_odd.key", "x")]));
    }

    #[test]
    fn malformed_setting_names_are_rejected_with_the_variable_named() {
        let err = passthrough_from(vars(&[("ORDERFLOW_KAFKA_SASL-MECHANISM", "PLAIN")])).expect_err("invalid");
        assert!(err.to_string().contains("ORDERFLOW_KAFKA_SASL-MECHANISM"), "{err}");
        assert!(passthrough_from(vars(&[("ORDERFLOW_KAFKA_", "x")])).is_err());
    }

    #[test]
    fn operator_overrides_win_over_orderflow_defaults() {
        let settings = KafkaSettings { brokers: "b:9092".into(), overrides: vars(&[("linger.ms", "50")]) };
        let config = settings.client_config_with(&[("linger.ms", "5"), ("acks", "all")]);
        assert_eq!(config.get("linger.ms"), Some("50"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let settings = KafkaSettings {
            brokers: "b:9092".into(),
            overrides: vars(&[("sasl.password", "hunter2"), ("ssl.key.password", "pw2"), ("sasl.username", "svc")]),
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("pw2"), "{shown}");
        assert!(shown.contains("svc"), "{shown}");
    }
}
