//! If a group's offset row vanished (an operator deleted it, a generation was dropped
//! under a running member), the next batch recreates it and moves it, instead of applying
//! events while no offset records them.

use std::collections::BTreeMap;

use projections::store::{Batch, LogRecord, Pipelined, Store};
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
        pipelined: None,
    };
    let first = store.batches().apply(ProjectionKind::Payment, &batch, &codec).await.expect("first batch");
    assert_eq!(first.applied, 1);
    sqlx::query("DELETE FROM consumer_offsets").execute(store.pool()).await.expect("delete the row");

    let records = [record(1, EventKind::PaymentAuthorized)];
    let read_from = BTreeMap::from([(0, 1)]);
    let batch = Batch {
        group: "g",
        topic: "t",
        role: schemas::TopicRole::Orders,
        records: &records,
        read_from: &read_from,
        pipelined: None,
    };
    let second = store.batches().apply(ProjectionKind::Payment, &batch, &codec).await.expect("second batch");
    assert_eq!(second.applied, 1);
    assert_eq!(store.reads().stored_offsets("g", "t", &[0]).await.expect("offsets"), vec![(0, 2)]);
}

on_each_database!(a_batch_started_behind_one_that_rolled_back_rewinds_to_where_that_one_started => a_batch_started_behind_one_that_rolled_back_rewinds_to_where_that_one_started);

/// A member started its second batch (offsets 5–6) while its first (0–4, the partition's
/// first records, no offset row yet) was in flight; the first rolled back, taking the row
/// it had created with it. The second must not create the row at its own first record and
/// apply from there (records 0–4 would never be applied): it takes the first's start as
/// the stored offset and rewinds the partition to it.
async fn a_batch_started_behind_one_that_rolled_back_rewinds_to_where_that_one_started(url: &str) {
    let store = Store::connect(url).await.expect("store");
    let codec = Codec::builtin();
    let record = |offset: i64| LogRecord {
        partition: 0,
        offset,
        key: Some(sample(EventKind::OrderPlaced).key().into_bytes()),
        payload: Some(codec.encode(&sample(EventKind::OrderPlaced)).expect("encode")),
        timestamp_ms: None,
        published_by: None,
        epoch: 1,
        trace_parent: None,
    };
    let records = [record(5), record(6)];
    // Dispatched as if the first batch had committed: reading from 5.
    let read_from = BTreeMap::from([(0, 5)]);
    let pipelined = Pipelined { origins: BTreeMap::from([(0, 0)]), ..Pipelined::default() };
    let batch = Batch {
        group: "g",
        topic: "t",
        role: schemas::TopicRole::Orders,
        records: &records,
        read_from: &read_from,
        pipelined: Some(&pipelined),
    };
    let outcome = store.batches().apply(ProjectionKind::Payment, &batch, &codec).await.expect("batch");
    assert_eq!(outcome.applied, 0, "nothing is applied past records not applied: {outcome:?}");
    assert_eq!(outcome.rewind, vec![(0, 0)], "the partition is read again from the first batch's start: {outcome:?}");
    // Nothing of it committed: still no row, so the partition is read from its start.
    assert!(store.reads().stored_offsets("g", "t", &[0]).await.expect("offsets").is_empty());
}
