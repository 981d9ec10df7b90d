//! After a takeover (eu's orders written by us under epoch 2), a batch of us's own log
//! applies an eu order's new-epoch event only once us's copy group has applied eu's copy
//! up to the cut, refuses such an event under another epoch, and refuses the copy's
//! records after the cut (eu's late tail).

use std::collections::BTreeMap;

use projections::store::{Batch, BatchOutcome, LogRecord, Store};
use projections::ProjectionKind;
use schemas::samples::lifecycle;
use schemas::{Codec, CutPoint, Event, Handover, Region};

fn record(codec: &Codec, event: &Event, offset: i64, epoch: u32) -> LogRecord {
    LogRecord { epoch, ..crate::dedupe::record(codec, event, offset) }
}

/// One batch of `group` on `topic` holding `records`.
async fn apply(store: &Store, group: &str, topic: &str, records: &[LogRecord]) -> BatchOutcome {
    let read_from = BTreeMap::from([(0, records[0].offset)]);
    let batch = Batch { group, topic, role: schemas::TopicRole::Orders, records, read_from: &read_from };
    store.batches().apply(ProjectionKind::Payment, &batch, &Codec::builtin()).await.expect("batch")
}

async fn dead_letters(store: &Store) -> i64 {
    use sqlx::Row;
    let row = sqlx::query("SELECT COUNT(*) AS n FROM dead_letters").fetch_one(store.pool()).await.expect("count");
    row.try_get("n").expect("n")
}

async fn new_epoch_events_wait_for_the_copy_up_to_the_cut(url: &str) {
    let (eu, us) = (Region::parse("eu").expect("region"), Region::parse("us").expect("region"));
    let store = Store::connect(url).await.expect("store").with_region(Some(&us));
    let codec = Codec::builtin();
    let order = eu.order_id([7; 16]);
    let events = lifecycle(order);
    let (placed, authorized, captured) = (&events[0], &events[1], &events[2]);
    let handover = Handover {
        region: "eu".into(),
        owner: "us".into(),
        epoch: 2,
        cut: vec![CutPoint { topic: "t".into(), partition: 0, next_offset: 2, last_event_id: None }],
        at_ms: 0,
        decided_by: "test".into(),
        reason: "eu lost".into(),
    };
    assert!(store.operations().record_handover(&handover).await.expect("recorded"));
    let (own, copy) = ("t-payment", "t-payment@eu");

    // The copy group has applied eu's placement, not yet the authorization before the cut.
    let first = apply(&store, copy, "eu.t", &[record(&codec, placed, 0, 1)]).await;
    assert_eq!(first.applied, 1);
    // us's capture under epoch 2 waits: the partition stops there, to be read again.
    let early = apply(&store, own, "t", &[record(&codec, captured, 0, 2)]).await;
    assert_eq!((early.applied, early.rewind.clone()), (0, vec![(0, 0)]), "{early:?}");
    // The copy reaches the cut; then the capture applies.
    assert_eq!(apply(&store, copy, "eu.t", &[record(&codec, authorized, 1, 1)]).await.applied, 1);
    let later = apply(&store, own, "t", &[record(&codec, captured, 0, 2)]).await;
    assert_eq!((later.applied, later.rewind.len()), (1, 0), "{later:?}");
    let view = store.reads().order_view(&order.to_string()).await.expect("view").expect("the order");
    assert!(view.payment.expect("payment").captured_minor > 0);

    // Under another epoch on us's log, or on eu's copy after the cut: refused, recorded.
    let before = dead_letters(&store).await;
    let forged = apply(&store, own, "t", &[record(&codec, captured, 1, 1)]).await;
    assert_eq!((forged.applied, forged.dead_lettered), (0, 1), "{forged:?}");
    let late = apply(&store, copy, "eu.t", &[record(&codec, captured, 2, 1)]).await;
    assert_eq!((late.applied, late.dead_lettered), (0, 1), "{late:?}");
    assert_eq!(dead_letters(&store).await, before + 2);
}

on_each_database!(an_event_of_the_new_epoch_waits_for_the_copy_up_to_the_cut_and_the_late_tail_is_refused => new_epoch_events_wait_for_the_copy_up_to_the_cut);
