//! The stock group: one state per SKU, changed only by the stock topic, which carries one
//! SKU's adjustments and requests in one partition, so they are decided in log order by
//! one owner. A reservation is granted only when the units are available, so reserved
//! never exceeds on hand through orders.
//!
//! Each (SKU, order) pair has a hold that remembers what was decided for it: a request
//! repeated under another id, or a reserve arriving after its release (two relays racing
//! after a failover), changes nothing.
//!
//! A transfer between two regions' pools is decided like an order's hold, under the
//! transfer's id: the giving pool dispatches the units (they leave its on-hand units, or
//! the request is refused when fewer are available) and the receiving pool counts them in
//! when their receipt arrives, once per transfer. Between the two the units are in
//! transit and in neither pool, so no region can sell them.
use schemas::{Event, EventKind, StockAction, StockDecided, StockOutcome, StockTransfer};
use uuid::Uuid;

use super::{caused_by, Context};
use crate::model::Rejection;

/// One SKU's units. available = on_hand − reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuStock {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub shipped: i64,
    /// Counts the SKU's changes; every decision carries it.
    pub version: i64,
}

impl SkuStock {
    pub fn empty(sku: &str) -> Self {
        SkuStock { sku: sku.to_string(), on_hand: 0, reserved: 0, shipped: 0, version: 0 }
    }

    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

status_enum! {
    /// What one order holds of one SKU.
    HoldStatus {
        Reserved => "reserved",
        Rejected => "rejected",
        Released => "released",
        Shipped => "shipped",
        Dispatched => "dispatched",
        Received => "received",
    }
}

/// What one order (or one transfer: [`hold_id`]) holds of one SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub sku: String,
    /// The order's id, or the transfer's.
    pub order_id: Uuid,
    pub quantity: i32,
    pub status: HoldStatus,
}

/// What one stock-topic event changes: the SKU, the order's hold, and the decision to
/// publish (`None` for a request that changes nothing).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StockDecision {
    pub sku: Option<SkuStock>,
    pub hold: Option<Hold>,
    pub emit: Option<Event>,
}

pub fn wants(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::StockAdjusted
            | EventKind::StockRequested
            | EventKind::StockTransferRequested
            | EventKind::StockTransferReceived
    )
}

/// The SKU an event of the stock topic is about.
pub fn sku_of(event: &Event) -> Option<&str> {
    match event {
        Event::StockAdjusted(e) => Some(&e.sku),
        Event::StockRequested(e) => Some(&e.sku),
        Event::StockTransferRequested(e) | Event::StockTransferReceived(e) => Some(&e.sku),
        _ => None,
    }
}

/// The id an event's hold is kept under: its order's, or its transfer's.
pub fn hold_id(event: &Event) -> Option<Uuid> {
    match event {
        Event::StockTransferRequested(t) | Event::StockTransferReceived(t) => Some(t.transfer_id),
        other => other.order_id(),
    }
}

/// The hold a decision already on the log stands for (recovering the state from the log).
pub fn hold_decided(event: &Event, logged: &StockDecided) -> Option<Hold> {
    let (order_id, quantity, status) = match (event, logged.outcome) {
        (Event::StockTransferRequested(t), StockOutcome::Rejected) => (t.transfer_id, t.units, HoldStatus::Rejected),
        (Event::StockTransferRequested(t), _) => (t.transfer_id, t.units, HoldStatus::Dispatched),
        (Event::StockTransferReceived(t), _) => (t.transfer_id, t.units, HoldStatus::Received),
        (_, outcome) => {
            let status = match outcome {
                StockOutcome::Reserved => HoldStatus::Reserved,
                StockOutcome::Rejected => HoldStatus::Rejected,
                StockOutcome::Released => HoldStatus::Released,
                StockOutcome::Shipped => HoldStatus::Shipped,
                StockOutcome::Adjusted => return None,
            };
            (logged.order_id?, logged.quantity, status)
        }
    };
    Some(Hold { sku: logged.sku.clone(), order_id, quantity, status })
}

/// One transfer as the pools' holds tell it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TransferState {
    pub transfer_id: Uuid,
    pub sku: String,
    pub units: i32,
    /// The region whose pool dispatched it, once one did.
    pub dispatched_by: Option<String>,
    /// The region whose pool counted it in, once one did.
    pub received_by: Option<String>,
}

impl TransferState {
    /// Units dispatched and not received anywhere yet.
    pub fn in_transit(&self) -> i64 {
        if self.dispatched_by.is_some() && self.received_by.is_none() {
            i64::from(self.units)
        } else {
            0
        }
    }
}

/// Every transfer the holds of each region's pool name (`(region, hold)`, transfer holds
/// only), and the units in transit per SKU.
pub fn transfers<'a>(
    holds: impl IntoIterator<Item = (&'a str, &'a Hold)>,
) -> (Vec<TransferState>, std::collections::BTreeMap<String, i64>) {
    let mut by_id: std::collections::BTreeMap<(String, Uuid), TransferState> = std::collections::BTreeMap::new();
    for (region, hold) in holds {
        let state = by_id.entry((hold.sku.clone(), hold.order_id)).or_insert_with(|| TransferState {
            transfer_id: hold.order_id,
            sku: hold.sku.clone(),
            units: hold.quantity,
            dispatched_by: None,
            received_by: None,
        });
        match hold.status {
            HoldStatus::Dispatched => state.dispatched_by = Some(region.to_string()),
            HoldStatus::Received => state.received_by = Some(region.to_string()),
            _ => {}
        }
    }
    let mut in_transit = std::collections::BTreeMap::new();
    for state in by_id.values() {
        *in_transit.entry(state.sku.clone()).or_insert(0) += state.in_transit();
    }
    (by_id.into_values().collect(), in_transit)
}

/// A transfer's own rules, whichever pool reads it.
fn check_transfer(t: &StockTransfer) -> Result<i64, Rejection> {
    if t.units <= 0 {
        return Err(Rejection::new(format!("a stock transfer of {} units", t.units)));
    }
    if t.from_region == t.to_region {
        return Err(Rejection::new(format!("a stock transfer from region {:?} to itself", t.from_region)));
    }
    Ok(i64::from(t.units))
}

fn decided(
    stock: &SkuStock,
    event: &Event,
    order_id: Option<Uuid>,
    outcome: StockOutcome,
    quantity: i32,
    ctx: &Context,
) -> Event {
    Event::StockDecided(StockDecided {
        envelope: caused_by(event.envelope(), "decided", ctx.now),
        order_id,
        sku: stock.sku.clone(),
        outcome,
        quantity,
        on_hand: stock.on_hand,
        reserved: stock.reserved,
        shipped: stock.shipped,
        version: stock.version,
    })
}

/// Decides one event of the stock topic for its SKU (`stock`, the SKU's current state or
/// [`SkuStock::empty`]) and the order's hold on it.
pub fn decide(stock: &SkuStock, hold: Option<&Hold>, event: &Event, ctx: &Context) -> Result<StockDecision, Rejection> {
    let mut next = stock.clone();
    next.version += 1;
    match event {
        Event::StockAdjusted(adjusted) => {
            next.on_hand = next.on_hand.saturating_add(i64::from(adjusted.delta));
            let emit = decided(&next, event, None, StockOutcome::Adjusted, adjusted.delta, ctx);
            Ok(StockDecision { sku: Some(next), hold: None, emit: Some(emit) })
        }
        Event::StockRequested(request) => {
            if request.quantity <= 0 {
                return Err(Rejection::new(format!("a stock request for {} units", request.quantity)));
            }
            let quantity = i64::from(request.quantity);
            let held =
                |status| Hold { sku: next.sku.clone(), order_id: request.order_id, quantity: request.quantity, status };
            let (outcome, hold) = match (request.action, hold.map(|h| h.status)) {
                (StockAction::Reserve, None) if next.available() >= quantity => {
                    next.reserved += quantity;
                    (StockOutcome::Reserved, held(HoldStatus::Reserved))
                }
                (StockAction::Reserve, None) => (StockOutcome::Rejected, held(HoldStatus::Rejected)),
                (StockAction::Release, Some(HoldStatus::Reserved)) => {
                    next.reserved -= quantity;
                    (StockOutcome::Released, held(HoldStatus::Released))
                }
                (StockAction::Release, None) => {
                    // Released before its reservation arrived: remember it, so the
                    // reservation is refused when it does. Nothing to announce.
                    let hold = Hold { quantity: 0, ..held(HoldStatus::Released) };
                    return Ok(StockDecision { sku: None, hold: Some(hold), emit: None });
                }
                (StockAction::Ship, Some(HoldStatus::Reserved)) => {
                    next.reserved -= quantity;
                    next.on_hand -= quantity;
                    next.shipped += quantity;
                    (StockOutcome::Shipped, held(HoldStatus::Shipped))
                }
                // Decided already (a copy of the request, or a late one): nothing changes.
                _ => return Ok(StockDecision::default()),
            };
            let emit = decided(&next, event, Some(request.order_id), outcome, request.quantity, ctx);
            Ok(StockDecision { sku: Some(next), hold: Some(hold), emit: Some(emit) })
        }
        Event::StockTransferRequested(t) => {
            let units = check_transfer(t)?;
            if hold.is_some() {
                return Ok(StockDecision::default());
            }
            let (outcome, status, quantity) = if next.available() >= units {
                next.on_hand -= units;
                (StockOutcome::Adjusted, HoldStatus::Dispatched, -t.units)
            } else {
                (StockOutcome::Rejected, HoldStatus::Rejected, t.units)
            };
            let hold = Hold { sku: next.sku.clone(), order_id: t.transfer_id, quantity: t.units, status };
            let emit = decided(&next, event, None, outcome, quantity, ctx);
            Ok(StockDecision { sku: Some(next), hold: Some(hold), emit: Some(emit) })
        }
        Event::StockTransferReceived(t) => {
            let units = check_transfer(t)?;
            if hold.is_some() {
                return Ok(StockDecision::default());
            }
            next.on_hand = next.on_hand.saturating_add(units);
            let hold = Hold {
                sku: next.sku.clone(),
                order_id: t.transfer_id,
                quantity: t.units,
                status: HoldStatus::Received,
            };
            let emit = decided(&next, event, None, StockOutcome::Adjusted, t.units, ctx);
            Ok(StockDecision { sku: Some(next), hold: Some(hold), emit: Some(emit) })
        }
        other => Err(Rejection::new(format!("the stock group does not read {:?}", other.kind()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use schemas::samples::sample;
    use schemas::StockRequested;

    fn ctx() -> Context {
        Context {
            now: Utc.timestamp_opt(1_800_000_000, 0).single().expect("time"),
            payment_timeout: std::time::Duration::from_secs(60),
        }
    }

    fn request(order: u128, action: StockAction, quantity: i32) -> Event {
        let Event::StockRequested(mut r) = sample(EventKind::StockRequested) else { unreachable!() };
        r.order_id = Uuid::from_u128(order);
        r.envelope.event_id = Uuid::from_u128(0x5000 + order * 10 + action as u128);
        Event::StockRequested(StockRequested { action, quantity, ..r })
    }

    fn stock(on_hand: i64, reserved: i64) -> SkuStock {
        SkuStock { on_hand, reserved, ..SkuStock::empty("SKU-1") }
    }

    fn outcome(d: &StockDecision) -> Option<StockOutcome> {
        match &d.emit {
            Some(Event::StockDecided(e)) => Some(e.outcome),
            _ => None,
        }
    }

    #[test]
    fn a_reservation_within_the_available_units_is_granted() {
        let d = decide(&stock(3, 1), None, &request(1, StockAction::Reserve, 2), &ctx()).expect("decides");
        assert_eq!(outcome(&d), Some(StockOutcome::Reserved));
        let next = d.sku.expect("sku");
        assert_eq!((next.on_hand, next.reserved, next.version), (3, 3, 1));
        assert_eq!(d.hold.expect("hold").status, HoldStatus::Reserved);
    }

    #[test]
    fn a_reservation_beyond_the_available_units_is_rejected_and_reserves_nothing() {
        let d = decide(&stock(3, 2), None, &request(1, StockAction::Reserve, 2), &ctx()).expect("decides");
        assert_eq!(outcome(&d), Some(StockOutcome::Rejected));
        assert_eq!(d.sku.expect("sku").reserved, 2);
        let Some(Event::StockDecided(e)) = d.emit else { panic!() };
        assert_eq!((e.on_hand - e.reserved, e.quantity), (1, 2), "the decision says what was available");
    }

    #[test]
    fn ten_units_serve_exactly_ten_single_unit_orders() {
        let mut sku = stock(10, 0);
        let mut granted = 0;
        for order in 0..40 {
            let d = decide(&sku, None, &request(order, StockAction::Reserve, 1), &ctx()).expect("decides");
            granted += usize::from(outcome(&d) == Some(StockOutcome::Reserved));
            sku = d.sku.expect("sku");
            assert!(sku.available() >= 0);
        }
        assert_eq!(granted, 10);
    }

    #[test]
    fn releasing_a_reservation_gives_the_units_back_once() {
        let reserved = decide(&stock(2, 0), None, &request(1, StockAction::Reserve, 2), &ctx()).expect("reserve");
        let (sku, hold) = (reserved.sku.expect("sku"), reserved.hold.expect("hold"));
        let released = decide(&sku, Some(&hold), &request(1, StockAction::Release, 2), &ctx()).expect("release");
        assert_eq!(outcome(&released), Some(StockOutcome::Released));
        let (sku, hold) = (released.sku.expect("sku"), released.hold.expect("hold"));
        assert_eq!(sku.available(), 2);
        let again = decide(&sku, Some(&hold), &request(1, StockAction::Release, 2), &ctx()).expect("again");
        assert_eq!(again, StockDecision::default());
    }

    #[test]
    fn a_reservation_arriving_after_its_release_is_refused() {
        let released = decide(&stock(5, 0), None, &request(1, StockAction::Release, 2), &ctx()).expect("release");
        assert_eq!(released.emit, None);
        let hold = released.hold.expect("a remembered release");
        let late = decide(&stock(5, 0), Some(&hold), &request(1, StockAction::Reserve, 2), &ctx()).expect("late");
        assert_eq!(late, StockDecision::default());
    }

    #[test]
    fn shipping_moves_reserved_units_out_of_on_hand() {
        let reserved = decide(&stock(4, 0), None, &request(1, StockAction::Reserve, 3), &ctx()).expect("reserve");
        let (sku, hold) = (reserved.sku.expect("sku"), reserved.hold.expect("hold"));
        let shipped = decide(&sku, Some(&hold), &request(1, StockAction::Ship, 3), &ctx()).expect("ship");
        let sku = shipped.sku.expect("sku");
        assert_eq!((sku.on_hand, sku.reserved, sku.shipped, sku.available()), (1, 0, 3, 1));
    }

    #[test]
    fn adjustments_change_on_hand_and_are_announced_with_the_levels() {
        let d = decide(&stock(0, 0), None, &sample(EventKind::StockAdjusted), &ctx()).expect("adjust");
        let Some(Event::StockDecided(e)) = d.emit else { panic!() };
        assert_eq!((e.outcome, e.quantity, e.on_hand, e.order_id), (StockOutcome::Adjusted, -3, -3, None));
    }

    #[test]
    fn requests_for_no_units_are_refused() {
        assert!(decide(&stock(5, 0), None, &request(1, StockAction::Reserve, 0), &ctx()).is_err());
    }

    fn transfer(kind: EventKind, units: i32) -> Event {
        let mut event = sample(kind);
        if let Event::StockTransferRequested(t) | Event::StockTransferReceived(t) = &mut event {
            t.units = units;
        }
        event
    }

    #[test]
    fn a_transfer_within_the_available_units_leaves_the_pool_once_and_no_order_can_take_them() {
        let d = decide(&stock(5, 2), None, &transfer(EventKind::StockTransferRequested, 3), &ctx()).expect("decides");
        let Some(Event::StockDecided(e)) = &d.emit else { panic!("no decision") };
        assert_eq!((e.outcome, e.quantity, e.order_id), (StockOutcome::Adjusted, -3, None));
        let (sku, hold) = (d.sku.expect("sku"), d.hold.expect("hold"));
        assert_eq!((sku.on_hand, sku.available()), (2, 0), "the dispatched units are in no pool");
        assert_eq!(hold.status, HoldStatus::Dispatched);
        let again = decide(&sku, Some(&hold), &transfer(EventKind::StockTransferRequested, 3), &ctx()).expect("again");
        assert_eq!(again, StockDecision::default(), "a request read twice dispatches once");
        let order = decide(&sku, None, &request(1, StockAction::Reserve, 1), &ctx()).expect("order");
        assert_eq!(outcome(&order), Some(StockOutcome::Rejected));
    }

    #[test]
    fn a_transfer_beyond_the_available_units_is_refused_and_moves_nothing() {
        let d = decide(&stock(5, 3), None, &transfer(EventKind::StockTransferRequested, 3), &ctx()).expect("decides");
        assert_eq!(outcome(&d), Some(StockOutcome::Rejected));
        assert_eq!((d.sku.expect("sku").on_hand, d.hold.expect("hold").status), (5, HoldStatus::Rejected));
    }

    #[test]
    fn a_received_transfer_counts_in_once_and_nonsense_transfers_are_refused() {
        let d = decide(&stock(1, 0), None, &transfer(EventKind::StockTransferReceived, 4), &ctx()).expect("decides");
        let (sku, hold) = (d.sku.expect("sku"), d.hold.expect("hold"));
        assert_eq!((sku.on_hand, hold.status), (5, HoldStatus::Received));
        let again = decide(&sku, Some(&hold), &transfer(EventKind::StockTransferReceived, 4), &ctx()).expect("again");
        assert_eq!(again, StockDecision::default());
        assert!(decide(&sku, None, &transfer(EventKind::StockTransferReceived, 0), &ctx()).is_err());
        let mut to_itself = transfer(EventKind::StockTransferRequested, 1);
        if let Event::StockTransferRequested(t) = &mut to_itself {
            t.to_region = t.from_region.clone();
        }
        assert!(decide(&sku, None, &to_itself, &ctx()).is_err());
    }

    #[test]
    fn units_dispatched_and_not_yet_received_are_in_transit_and_nowhere_else() {
        let hold = |id: u128, units, status| Hold {
            sku: "SKU-1".into(),
            order_id: Uuid::from_u128(id),
            quantity: units,
            status,
        };
        let (eu, us) = (
            [hold(1, 3, HoldStatus::Dispatched), hold(2, 5, HoldStatus::Dispatched), hold(3, 7, HoldStatus::Received)],
            [hold(1, 3, HoldStatus::Received)],
        );
        let (all, in_transit) = transfers(eu.iter().map(|h| ("eu", h)).chain(us.iter().map(|h| ("us", h))));
        assert_eq!(all.len(), 3);
        assert_eq!(in_transit.get("SKU-1"), Some(&5), "transfer 2 only: 1 arrived, 3 was received from elsewhere");
    }

    #[test]
    fn the_hold_a_logged_transfer_decision_stands_for_is_what_the_live_group_kept() {
        for (kind, available) in [
            (EventKind::StockTransferRequested, 5),
            (EventKind::StockTransferRequested, 1),
            (EventKind::StockTransferReceived, 0),
        ] {
            let event = transfer(kind, 3);
            let d = decide(&stock(available, 0), None, &event, &ctx()).expect("decides");
            let Some(Event::StockDecided(logged)) = &d.emit else { panic!("no decision") };
            assert_eq!(hold_decided(&event, logged), d.hold, "{kind:?} with {available} available");
        }
    }
}
