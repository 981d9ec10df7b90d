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
        cut: vec![CutPoint { topic: "t".into(), partition: 0, next_offset: 2, last_event_id: None, in_region: None }],
        at_ms: 0,
        decided_by: "test".into(),
        reason: "eu lost".into(),
        earlier_cuts: Vec::new(),
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

/// The takeover's and the failback's handovers as eu records them: us wrote eu's orders
/// (epoch 2) from offset 2 of eu's own log, until offset 1 of eu's copy of us's log.
fn takeover_and_failback() -> [Handover; 2] {
    let point = |next_offset, in_region: Option<&str>| CutPoint {
        topic: "t".into(),
        partition: 0,
        next_offset,
        last_event_id: None,
        in_region: in_region.map(String::from),
    };
    let takeover = Handover {
        region: "eu".into(),
        owner: "us".into(),
        epoch: 2,
        cut: vec![point(2, None)],
        at_ms: 0,
        decided_by: "test".into(),
        reason: "eu lost".into(),
        earlier_cuts: Vec::new(),
    };
    let failback = Handover {
        owner: "eu".into(),
        epoch: 3,
        cut: vec![point(1, None)],
        reason: "eu back".into(),
        earlier_cuts: vec![schemas::EarlierCut { epoch: 2, point: point(2, Some("eu")) }],
        ..takeover.clone()
    };
    [takeover, failback]
}

async fn after_a_failback_the_takers_records_wait_for_the_home_log_up_to_the_first_cut(url: &str) {
    let eu = Region::parse("eu").expect("region");
    let store = Store::connect(url).await.expect("store").with_region(Some(&eu));
    let codec = Codec::builtin();
    let order = eu.order_id([9; 16]);
    let events = lifecycle(order);
    let payment = |kind| schemas::samples::readdressed(schemas::samples::sample(kind), order);
    let (failed, refunded) = (payment(schemas::EventKind::PaymentFailed), payment(schemas::EventKind::PaymentRefunded));
    let authorized_again = payment(schemas::EventKind::PaymentAuthorized);
    for handover in takeover_and_failback() {
        assert!(store.operations().record_handover(&handover).await.expect("recorded"));
    }
    let (own, copy) = ("t-payment", "t-payment@us");
    assert_eq!(apply(&store, own, "t", &[record(&codec, &events[0], 0, 1)]).await.applied, 1);
    // us's capture (epoch 2, in eu's copy of us's log) waits for eu's own log up to the
    // takeover's cut.
    let early = apply(&store, copy, "us.t", &[record(&codec, &events[2], 0, 2)]).await;
    assert_eq!((early.applied, early.rewind.clone()), (0, vec![(0, 0)]), "{early:?}");
    assert_eq!(apply(&store, own, "t", &[record(&codec, &events[1], 1, 1)]).await.applied, 1);
    // eu's own record under the failback's epoch waits for the copy of us's log.
    let waiting = apply(&store, own, "t", &[record(&codec, &refunded, 2, 3)]).await;
    assert_eq!((waiting.applied, waiting.rewind.clone()), (0, vec![(0, 2)]), "{waiting:?}");
    assert_eq!(apply(&store, copy, "us.t", &[record(&codec, &events[2], 0, 2)]).await.applied, 1);
    // us's records after the failback's cut are refused and recorded.
    let before = dead_letters(&store).await;
    let late = apply(&store, copy, "us.t", &[record(&codec, &failed, 1, 2)]).await;
    assert_eq!((late.applied, late.dead_lettered), (0, 1), "{late:?}");
    assert_eq!(apply(&store, own, "t", &[record(&codec, &refunded, 2, 3)]).await.applied, 1);
    // eu's late tail (its own log under epoch 1 after the takeover's cut): refused too.
    let tail = apply(&store, own, "t", &[record(&codec, &authorized_again, 3, 1)]).await;
    assert_eq!((tail.applied, tail.dead_lettered), (0, 1), "{tail:?}");
    assert_eq!(dead_letters(&store).await, before + 2);
}

on_each_database!(after_a_failback_the_takers_records_wait_for_the_home_log_up_to_the_first_cut_and_both_tails_are_refused => after_a_failback_the_takers_records_wait_for_the_home_log_up_to_the_first_cut);
