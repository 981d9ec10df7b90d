//! Topic administration through the Kafka admin API, so the same call works against any
//! Kafka-protocol broker.
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::error::InfraError;
use crate::kafka_settings::KafkaSettings;

/// What to create.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// `None`: the broker's `default.replication.factor`.
    pub replication_factor: Option<i32>,
    /// Topic settings the topic is created with (e.g. `retention.ms`).
    pub configs: Vec<(String, String)>,
}

/// The settings of a topic that is the source of truth: it keeps every record for ever
/// (no time or size limit) and is never compacted (compaction keeps one record per key,
/// and an order's events share a key). Rebuilding anything from the log needs its start.
pub fn keep_everything() -> Vec<(String, String)> {
    [("retention.ms", "-1"), ("retention.bytes", "-1"), ("cleanup.policy", "delete")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What happened to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    AlreadyExisted,
}

/// Creates each topic; a topic that already exists is fine (its partition count is left
/// as it is: changing it would move keys between partitions).
#[tracing::instrument(skip(settings), fields(brokers = %settings.brokers))]
pub async fn create_topics(
    settings: &KafkaSettings,
    specs: &[TopicSpec],
    timeout: Duration,
) -> Result<Vec<(String, TopicOutcome)>, InfraError> {
    for spec in specs {
        if spec.partitions < 1 || spec.replication_factor.is_some_and(|r| r < 1) {
            return Err(InfraError::Config(format!(
                "topic {}: partitions and replication factor must be at least 1",
                spec.name
            )));
        }
    }
    let admin = admin_client(settings)?;
    let new_topics: Vec<NewTopic> = specs
        .iter()
        .map(|s| {
            s.configs.iter().fold(
                NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(s.replication_factor.unwrap_or(-1))),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
    let results = tokio::time::timeout(timeout + Duration::from_secs(1), admin.create_topics(&new_topics, &options))
        .await
        .map_err(|_| InfraError::AdminTimeout(timeout))?
        .map_err(InfraError::admin("creating topics"))?;
    results
        .into_iter()
        .map(|result| match result {
            Ok(name) => Ok((name, TopicOutcome::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => Ok((name, TopicOutcome::AlreadyExisted)),
            Err((name, code)) => Err(InfraError::Refused { what: format!("creating topic {name}"), code }),
        })
        .collect()
}

/// Deletes each topic with its records; one the broker does not know is fine (gone already).
#[tracing::instrument(skip(settings), fields(brokers = %settings.brokers))]
pub async fn delete_topics(settings: &KafkaSettings, names: &[String], timeout: Duration) -> Result<(), InfraError> {
    if names.is_empty() {
        return Ok(());
    }
    let admin = admin_client(settings)?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
    let results = tokio::time::timeout(timeout + Duration::from_secs(1), admin.delete_topics(&names, &options))
        .await
        .map_err(|_| InfraError::AdminTimeout(timeout))?
        .map_err(InfraError::admin("deleting topics"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => return Err(InfraError::Refused { what: format!("deleting topic {name}"), code }),
        }
    }
    Ok(())
}

/// A topic's settings as the broker describes them.
async fn describe(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    timeout: Duration,
) -> Result<rdkafka::admin::ConfigResource, InfraError> {
    use rdkafka::admin::ResourceSpecifier;
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let what = || format!("describing topic {topic}");
    let results = tokio::time::timeout(
        timeout + Duration::from_secs(1),
        admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &options),
    )
    .await
    .map_err(|_| InfraError::AdminTimeout(timeout))?
    .map_err(InfraError::admin(what()))?;
    results
        .into_iter()
        .next()
        .ok_or_else(|| InfraError::Config(format!("{}: no answer", what())))?
        .map_err(|code| InfraError::Refused { what: what(), code })
}

fn admin_client(settings: &KafkaSettings) -> Result<AdminClient<DefaultClientContext>, InfraError> {
    settings.client_config().create().map_err(InfraError::admin("creating the admin client"))
}

/// How long the broker keeps a topic's records (`retention.ms`); `None` for ever (`-1`).
#[tracing::instrument(skip(settings), fields(brokers = %settings.brokers))]
pub async fn retention(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<Option<Duration>, InfraError> {
    let resource = describe(&admin_client(settings)?, topic, timeout).await?;
    let millis = resource.get("retention.ms").and_then(|e| e.value.as_deref()).and_then(|v| v.parse::<i64>().ok());
    Ok(millis.and_then(|ms| u64::try_from(ms).ok()).map(Duration::from_millis))
}

/// Sets `configs` on an existing topic, keeping its other settings. (The admin API this
/// client speaks replaces a topic's whole set of settings, so the topic's own settings are
/// read first and sent back with the changed ones.)
#[tracing::instrument(skip(settings, configs), fields(brokers = %settings.brokers))]
pub async fn set_configs(
    settings: &KafkaSettings,
    topic: &str,
    configs: &[(String, String)],
    timeout: Duration,
) -> Result<(), InfraError> {
    use rdkafka::admin::{AlterConfig, ConfigSource, ResourceSpecifier};
    let admin = admin_client(settings)?;
    let what = || format!("changing the settings of topic {topic}");
    let mut wanted: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for entry in describe(&admin, topic, timeout).await?.entries {
        if entry.source == ConfigSource::DynamicTopic && !entry.is_sensitive {
            if let Some(value) = entry.value {
                wanted.insert(entry.name, value);
            }
        }
    }
    wanted.extend(configs.iter().cloned());
    let change = wanted.iter().fold(AlterConfig::new(ResourceSpecifier::Topic(topic)), |c, (k, v)| c.set(k, v));
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let results = tokio::time::timeout(timeout + Duration::from_secs(1), admin.alter_configs(&[change], &options))
        .await
        .map_err(|_| InfraError::AdminTimeout(timeout))?
        .map_err(InfraError::admin(what()))?;
    for result in results {
        result.map_err(|(_, code)| InfraError::Refused { what: what(), code })?;
    }
    Ok(())
}
