//! An order with a parked record parks its later events, whether its group has a few
//! parked orders (read whole and matched in memory) or more than a thousand (looked up
//! per order of the batch).
use crate::dedupe::apply;
use crate::support;

use projections::store::Store;
use schemas::samples::{readdressed, sample};
use schemas::{Codec, EventKind};
use uuid::Uuid;

async fn later_events_of_parked_orders_park(url: &str, parked_orders: usize) {
    let store = Store::connect(url).await.expect("store");
    let codec = Codec::builtin();
    // Captures of orders the projection never saw are rejected and parked.
    let captures: Vec<_> =
        (0..parked_orders).map(|_| readdressed(sample(EventKind::PaymentCaptured), Uuid::new_v4())).collect();
    let first = apply(&store, &codec, &captures.iter().collect::<Vec<_>>(), 0).await;
    assert_eq!(first.dead_lettered, parked_orders);

    let parked = captures[parked_orders / 2].order_id().expect("an order");
    let behind = readdressed(sample(EventKind::PaymentRefunded), parked);
    let fresh = readdressed(sample(EventKind::OrderPlaced), Uuid::new_v4());
    let later = apply(&store, &codec, &[&behind, &fresh], parked_orders as i64).await;
    assert_eq!((later.applied, later.dead_lettered), (1, 1), "the parked order's event parks, the new order applies");
    let letters =
        store.reads().list_dead_letters_with(Some("g"), Some(&parked.to_string()), true, 10).await.expect("letters");
    assert_eq!(letters.len(), 2, "the capture and the refund behind it");
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
