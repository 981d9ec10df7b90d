//! If a group's offset row vanished (an operator deleted it, a generation was dropped
//! under a running member), the next batch recreates it and moves it, instead of applying
//! events while no offset records them.

use std::collections::BTreeMap;

use projections::store::{Batch, LogRecord, Store};
use projections::ProjectionKind;
use schemas::samples::sample;
use schemas::{Codec, EventKind};

on_each_database!(a_vanished_offset_row_is_recreated_and_moves_with_the_batch => a_vanished_offset_row_is_recreated_and_moves_with_the_batch);

async fn a_vanished_offset_row_is_recreated_and_moves_with_the_batch(url: &str) {
    let store = Store::connect(url).await.expect("store");
    let codec = Codec::builtin();
    let record = |offset: i64, kind: EventKind| LogRecord {
        partition: 0,
        offset,
        // Keyed as the contract says: by the event's order id.
        key: Some(sample(kind).key().into_bytes()),
        payload: Some(codec.encode(&sample(kind)).expect("encode")),
        timestamp_ms: None,
        published_by: None,
        epoch: 1,
        trace_parent: None,
    };
    let records = [record(0, EventKind::OrderPlaced)];
    let batch = Batch {
        group: "g",
        topic: "t",
        role: schemas::TopicRole::Orders,
        records: &records,
        read_from: &BTreeMap::new(),
    };
    let first = store.batches().apply(ProjectionKind::Payment, &batch, &codec).await.expect("first batch");
    assert_eq!(first.applied, 1);
    sqlx::query("DELETE FROM consumer_offsets").execute(store.pool()).await.expect("delete the row");

    let records = [record(1, EventKind::PaymentAuthorized)];
    let read_from = BTreeMap::from([(0, 1)]);
    let batch =
        Batch { group: "g", topic: "t", role: schemas::TopicRole::Orders, records: &records, read_from: &read_from };
    let second = store.batches().apply(ProjectionKind::Payment, &batch, &codec).await.expect("second batch");
    assert_eq!(second.applied, 1);
    assert_eq!(store.reads().stored_offsets("g", "t", &[0]).await.expect("offsets"), vec![(0, 2)]);
}
