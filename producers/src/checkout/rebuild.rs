//! The checkout's state rebuilt from what it appended: each record under an
//! Idempotency-Key names its key's row ([`RequestHeader`]) and is the answer the request
//! got, and each `OrderPlaced` names its owner (the principal header). Pure: the caller
//! reads the log and writes the store.
use infra::log_reader::StoredRecord;
use schemas::{Event, Region, PRINCIPAL_HEADER, REQUEST_HEADER};

use super::accept::{Accepted, Subject};
use crate::idempotency::{RequestHeader, RestoredKey, RestoredOwner};
use crate::publisher::Position;

/// The key row and the owner one appended record gives back (`event`: the record decoded).
/// `orders_topic` and `home` are the checkout's, as when it answered.
pub fn rows_of(
    record: &StoredRecord,
    event: &Event,
    orders_topic: &str,
    home: Option<&Region>,
) -> (Option<RestoredKey>, Option<RestoredOwner>) {
    let key = record.header(REQUEST_HEADER).and_then(RequestHeader::parse).and_then(|request| {
        let position = Position {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
        };
        let accepted = Accepted::new(event.envelope().event_id, position, Subject::of(event)?, orders_topic, home);
        let response = serde_json::to_string(&accepted).ok()?;
        Some(RestoredKey { request, status: 202, response })
    });
    let owner = match event {
        Event::OrderPlaced(placed) => record
            .header(PRINCIPAL_HEADER)
            .and_then(|raw| std::str::from_utf8(raw).ok())
            .filter(|name| schemas::valid_principal_name(name))
            .map(|name| RestoredOwner {
                order_id: placed.order_id.to_string(),
                owner: name.to_string(),
                placed_at_ms: record.timestamp_ms.unwrap_or_default(),
            }),
        _ => None,
    };
    (key, owner)
}
