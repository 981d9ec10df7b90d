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

on_each_database!(a_position_read_while_batches_commit_pairs_each_offset_with_its_own_records_timestamp => positions_read_while_batches_commit_are_whole);

/// A member taking a partition over compares the record before the stored offset with the
/// timestamp stored beside it; the previous owner's last batch may be committing meanwhile.
/// Each read must pair an offset with the timestamp of the record just before it.
async fn positions_read_while_batches_commit_are_whole(url: &str) {
    let store = Store::connect(url).await.expect("store");
    let codec = Codec::builtin();
    let stamp = |offset: i64| 1_700_000_000_000 + offset * 7;
    let writer = {
        let (store, codec) = (store.clone(), codec.clone());
        tokio::spawn(async move {
            for offset in 0..150_i64 {
                let event = schemas::samples::readdressed(sample(EventKind::OrderPlaced), uuid::Uuid::new_v4());
                let records = [LogRecord {
                    partition: 0,
                    offset,
                    key: Some(event.key().into_bytes()),
                    payload: Some(codec.encode(&event).expect("encode")),
                    timestamp_ms: Some(stamp(offset)),
                    published_by: None,
                    epoch: 1,
                    trace_parent: None,
                }];
                let read_from = BTreeMap::from([(0, offset)]);
                let batch = Batch {
                    group: "g",
                    topic: "t",
                    role: schemas::TopicRole::Orders,
                    records: &records,
                    read_from: &read_from,
                };
                store.batches().apply(ProjectionKind::Payment, &batch, &codec).await.expect("batch");
            }
        })
    };
    let mut reads_while_writing = 0;
    while !writer.is_finished() {
        for position in store.batches().stored_positions("g", "t", &[0]).await.expect("positions") {
            assert_eq!(position.last_timestamp_ms, Some(stamp(position.offset - 1)), "{position:?}");
            reads_while_writing += 1;
        }
    }
    writer.await.expect("writer");
    assert!(reads_while_writing > 10, "only {reads_while_writing} reads overlapped the batches");
    let last = store.batches().stored_positions("g", "t", &[0]).await.expect("positions");
    assert_eq!(
        last,
        vec![projections::store::StoredPosition { partition: 0, offset: 150, last_timestamp_ms: Some(stamp(149)) }]
    );
}
