//! An order with a parked record (one the code cannot read) parks its later events, whether
//! its group has a few parked orders (read whole and matched in memory) or more than a
//! thousand (looked up per order of the batch). A caller's mistake is refused and recorded
//! instead: it holds nothing back.
use crate::dedupe::apply;
use crate::support;

use std::collections::BTreeMap;

use projections::store::{Batch, BatchOutcome, DeadLetterStatus, LogRecord, Store};
use projections::ProjectionKind;
use schemas::samples::{readdressed, sample};
use schemas::{Codec, EventKind, TopicRole};
use uuid::Uuid;

/// Applies `records` (offsets from `from` on) in one batch of the payment group.
async fn apply_records(store: &Store, codec: &Codec, records: &[LogRecord], from: i64) -> BatchOutcome {
    let read_from = BTreeMap::from([(0, from)]);
    let batch = Batch { group: "g", topic: "t", role: TopicRole::Orders, records, read_from: &read_from };
    store.batches().apply(ProjectionKind::Payment, &batch, codec).await.expect("batch")
}

async fn later_events_of_parked_orders_park(url: &str, parked_orders: usize) {
    let store = Store::connect(url).await.expect("store");
    let codec = Codec::builtin();
    // Records keyed by an order whose bytes no schema reads are parked under that order.
    let orders: Vec<Uuid> = (0..parked_orders).map(|_| Uuid::new_v4()).collect();
    let unreadable: Vec<LogRecord> = orders
        .iter()
        .zip(0..)
        .map(|(order, offset)| LogRecord {
            partition: 0,
            offset,
            key: Some(order.to_string().into_bytes()),
            payload: Some(vec![0, 0, 0, 0, 99, 1, 2, 3]),
            timestamp_ms: None,
            published_by: None,
            epoch: 1,
            trace_parent: None,
        })
        .collect();
    let first = apply_records(&store, &codec, &unreadable, 0).await;
    assert_eq!(first.dead_lettered, parked_orders);

    let parked = orders[parked_orders / 2];
    let behind = readdressed(sample(EventKind::PaymentRefunded), parked);
    let fresh = readdressed(sample(EventKind::OrderPlaced), Uuid::new_v4());
    let later = apply(&store, &codec, &[&behind, &fresh], parked_orders as i64).await;
    assert_eq!((later.applied, later.dead_lettered), (1, 1), "the parked order's event parks, the new order applies");
    let letters =
        store.reads().list_dead_letters_with(Some("g"), Some(&parked.to_string()), true, 10).await.expect("letters");
    assert_eq!(letters.len(), 2, "the unreadable record and the refund behind it");
    assert!(letters[1].reason.contains("earlier event of this order"), "{}", letters[1].reason);
}

#[tokio::test]
async fn later_events_of_a_parked_order_park_among_a_few_parked_orders() {
    later_events_of_parked_orders_park(&support::fresh_database().await, 3).await;
}

#[tokio::test]
async fn later_events_of_a_parked_order_park_among_more_than_a_thousand_parked_orders() {
    later_events_of_parked_orders_park(&support::fresh_database().await, 1_200).await;
}

#[tokio::test]
async fn a_refused_transition_is_recorded_resolved_and_never_holds_the_orders_later_events() {
    let store = Store::connect(&support::fresh_database().await).await.expect("store");
    let codec = Codec::builtin();
    let order = Uuid::new_v4();
    // A capture before the order exists, then the order and its real capture.
    let early = readdressed(sample(EventKind::PaymentCaptured), order);
    let placed = readdressed(sample(EventKind::OrderPlaced), order);
    let captured = readdressed(sample(EventKind::PaymentCaptured), order);
    // A refund above what was captured, then a legitimate one.
    let mut too_much = readdressed(sample(EventKind::PaymentRefunded), order);
    if let schemas::Event::PaymentRefunded(e) = &mut too_much {
        e.amount_minor = 1_000_000_000;
    }
    let refund = readdressed(sample(EventKind::PaymentRefunded), order);
    let outcome = apply(&store, &codec, &[&early, &placed, &captured, &too_much, &refund], 0).await;
    assert_eq!((outcome.applied, outcome.dead_lettered), (3, 2), "{outcome:?}");
    let letters =
        store.reads().list_dead_letters_with(Some("g"), Some(&order.to_string()), false, 10).await.expect("letters");
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters.iter().all(|l| l.status == DeadLetterStatus::Skipped && l.reason.starts_with("refused: ")),
        "{letters:?}"
    );
    let parked = store.reads().list_dead_letters_with(Some("g"), None, true, 10).await.expect("parked");
    assert!(parked.is_empty(), "nothing waits for an operator: {parked:?}");
    let view = store.reads().order_view(&order.to_string()).await.expect("view").expect("the order");
    let payment = view.payment.expect("payment row");
    let amount = |e: &schemas::Event| match e {
        schemas::Event::PaymentCaptured(p) | schemas::Event::PaymentRefunded(p) => p.amount_minor,
        other => panic!("{other:?}"),
    };
    assert_eq!((payment.captured_minor, payment.refunded_minor), (amount(&captured), amount(&refund)), "{payment:?}");
}

#[tokio::test]
async fn an_orders_events_before_an_unreadable_record_of_the_same_batch_are_applied_and_those_after_it_park() {
    let store = Store::connect(&support::fresh_database().await).await.expect("store");
    let codec = Codec::builtin();
    let order = Uuid::new_v4();
    let placed = crate::dedupe::record(&codec, &readdressed(sample(EventKind::OrderPlaced), order), 0);
    let unreadable = LogRecord {
        partition: 0,
        offset: 1,
        key: Some(order.to_string().into_bytes()),
        payload: Some(vec![0, 0, 0, 0, 99]),
        timestamp_ms: None,
        published_by: None,
        epoch: 1,
        trace_parent: None,
    };
    let captured = crate::dedupe::record(&codec, &readdressed(sample(EventKind::PaymentCaptured), order), 2);
    let outcome = apply_records(&store, &codec, &[placed, unreadable, captured], 0).await;
    assert_eq!((outcome.applied, outcome.dead_lettered), (1, 2), "{outcome:?}");
    let parked = store.reads().list_dead_letters_with(Some("g"), None, true, 10).await.expect("parked");
    let offsets: Vec<i64> = parked.iter().map(|d| d.offset).collect();
    assert_eq!(offsets, [1, 2], "{parked:?}");
}
