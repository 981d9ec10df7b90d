//! What the region commands share: the fences they put up and lift, the handover's append
//! to the control topic, and how a record's event id is found (offsets differ between a
//! log and its copies; ids do not).
use std::time::Duration;

use anyhow::Context as _;
use infra::acls::Pattern;
use infra::fence::{self, Fence};
use infra::log_reader::StoredRecord;
use schemas::{Handover, Region};

/// The fence of region `lost` at its own brokers: its pipeline's topics lose Write.
pub fn lost_region_fence(orders_topic: &str, principals: &[String]) -> Fence {
    Fence {
        topics: schemas::pipeline_topics(orders_topic).into_iter().map(|t| (t, Pattern::Literal)).collect(),
        principals: principals.to_vec(),
    }
}

/// The fence of the copies of `lost`'s pipeline in the region that took it over.
pub fn mirror_fence(lost: &Region, orders_topic: &str) -> Fence {
    Fence {
        topics: schemas::pipeline_topics(orders_topic).iter().map(|t| (lost.mirrored(t), Pattern::Literal)).collect(),
        principals: vec![fence::EVERYONE.to_string()],
    }
}

/// The id of the event a record carries: decoded, or its header where the payload is not an
/// event of the contract (decisions carry no id header).
pub fn event_id_in(codec: &schemas::Codec, record: &StoredRecord) -> Option<uuid::Uuid> {
    let decoded = record.payload.as_deref().and_then(|p| codec.decode(p).ok());
    decoded.map(|e| e.envelope().event_id).or_else(|| event_id_of(record))
}

/// The event id a record's header names, if it names one.
pub fn event_id_of(record: &StoredRecord) -> Option<uuid::Uuid> {
    std::str::from_utf8(record.header(schemas::EVENT_ID_HEADER)?).ok()?.parse().ok()
}

/// Appends the handover to this region's control topic (made if missing, keeping every
/// record).
pub async fn append_handover(
    kafka: &infra::KafkaSettings,
    orders_topic: &str,
    handover: &Handover,
) -> anyhow::Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let control = schemas::control_topic(orders_topic);
    let spec = infra::topics::TopicSpec {
        name: control.clone(),
        partitions: 1,
        replication_factor: None,
        configs: infra::topics::keep_everything(),
    };
    infra::topics::create_topics(kafka, &[spec], Duration::from_secs(30)).await?;
    let producer: FutureProducer = kafka.idempotent_producer(Duration::from_secs(30), Duration::ZERO).create()?;
    let payload = serde_json::to_vec(handover)?;
    producer
        .send(FutureRecord::to(&control).key(&handover.region).payload(&payload), Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .with_context(|| format!("appending the handover to {control}"))?;
    Ok(())
}
