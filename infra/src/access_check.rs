//! Telling "the broker refuses us" apart from "the broker is slow": librdkafka retries a
//! failed SASL handshake forever and reports it only as an error event, so without this a
//! wrong password looks like a timeout or a hang. Every command checks its credentials
//! once at start ([`check_access`]); long-running clients classify errors with
//! [`access_denied`].
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::error::InfraError;
use crate::kafka_settings::KafkaSettings;

/// Whether `code` says the broker refused our credentials or our ACLs: retrying with the
/// same settings cannot help.
pub fn access_denied(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
    )
}

/// Remembers the first refusal librdkafka reports for a client.
#[derive(Default)]
pub struct AccessReport {
    refusal: Mutex<Option<String>>,
}

impl AccessReport {
    /// Records `error` if it is a refusal; returns whether it was.
    pub fn record(&self, error: &KafkaError, reason: &str) -> bool {
        let denied = error.rdkafka_error_code().is_some_and(access_denied);
        if denied {
            let mut refusal = self.refusal.lock().unwrap_or_else(|e| e.into_inner());
            refusal.get_or_insert_with(|| format!("{error}: {reason}"));
        }
        denied
    }

    /// Records a log line if it reports a failed SASL or TLS handshake (which reaches the
    /// application as a log line first: the error event may be suppressed as a repeat);
    /// returns whether it did.
    pub fn observe_log(&self, fac: &str, message: &str) -> bool {
        let refused = fac == "FAIL"
            && (message.contains("SASL authentication error") || message.contains("SSL handshake failed"));
        if refused {
            let mut refusal = self.refusal.lock().unwrap_or_else(|e| e.into_inner());
            refusal.get_or_insert_with(|| message.to_string());
        }
        refused
    }

    /// What the broker refused, if it did.
    pub fn refusal(&self) -> Option<String> {
        self.refusal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ClientContext for AccessReport {
    fn error(&self, error: KafkaError, reason: &str) {
        if !self.record(&error, reason) {
            tracing::warn!(target: "librdkafka", error = &error as &dyn std::error::Error, "{reason}");
        }
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if self.observe_log(fac, message) {
            return;
        }
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
                tracing::warn!(target: "librdkafka", fac, "{message}")
            }
            _ => tracing::debug!(target: "librdkafka", fac, "{message}"),
        }
    }
}

// The check's client is a producer that never produces: unlike a consumer, it joins no
// group, so it asks for nothing but metadata (which every principal may read for its topic).
impl ProducerContext for AccessReport {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Connects once with `settings` and asks for the metadata of `topic` (or of the cluster):
/// a wrong password, a missing TLS trust or an ACL that hides the topic is an error naming
/// the cause within `timeout`, and so is a broker that does not answer at all.
#[tracing::instrument(skip(settings), fields(brokers = %settings.brokers))]
pub async fn check_access(settings: &KafkaSettings, topic: Option<&str>, timeout: Duration) -> Result<(), InfraError> {
    let client: BaseProducer<AccessReport> = settings
        .client_config()
        .create_with_context(AccessReport::default())
        .map_err(InfraError::admin("creating a client"))?;
    let topic = topic.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        // Short attempts: a refusal shows up within a second, long before `timeout`.
        let deadline = std::time::Instant::now() + timeout;
        let metadata = loop {
            let attempt = client.client().fetch_metadata(topic.as_deref(), Duration::from_secs(1));
            // Error events wait in the client's queue until it is polled.
            client.poll(Duration::from_millis(20));
            if let Some(refusal) = client.context().refusal() {
                return Err(InfraError::Denied(refusal));
            }
            if attempt.is_ok() || std::time::Instant::now() >= deadline {
                break attempt;
            }
        };
        let metadata = metadata.map_err(InfraError::admin("reading metadata (is the broker reachable?)"))?;
        for t in metadata.topics() {
            if let Some(code) = t.error().map(RDKafkaErrorCode::from) {
                if access_denied(code) {
                    return Err(InfraError::Denied(format!("topic {}: {code}", t.name())));
                }
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| InfraError::Config("the access check did not finish".into()))?
}
