//! Fulfilment per order: awaiting_payment → ready_to_ship (payment captured) → packed →
//! shipped → delivered, or cancelled, rejected or expired (the order process's decisions)
//! before it ships. Nothing ships unpaid, and nothing the order process gave up on ships:
//! packing or shipping such an order is rejected.
//!
//! The order process's decisions come from the decisions topic, the order's facts from the
//! orders topic, each read by a consumer of its own: a decision can be applied before the
//! placement it answers (a replay reads the smaller decisions topic faster). So a
//! rejection or expiry of an order not seen yet starts its row, dead, at the decision's
//! time, and the placement that follows fills in when it was placed; either order of the
//! two gives the same row.
use chrono::{DateTime, Utc};
use schemas::{Event, EventKind};
use uuid::Uuid;

use super::{Effect, Projection, Rejection};

status_enum! {
    /// Where an order is on its way to the customer.
    FulfilmentStatus {
        AwaitingPayment => "awaiting_payment",
        ReadyToShip => "ready_to_ship",
        Packed => "packed",
        Shipped => "shipped",
        Delivered => "delivered",
        Cancelled => "cancelled",
        /// The order process rejected the order (out of stock).
        Rejected => "rejected",
        /// The order process expired it (not paid in time).
        Expired => "expired",
    }
}

impl FulfilmentStatus {
    /// Not shipped yet and not cancelled: the warehouse's backlog.
    pub const OPEN: [FulfilmentStatus; 3] =
        [FulfilmentStatus::AwaitingPayment, FulfilmentStatus::ReadyToShip, FulfilmentStatus::Packed];
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FulfilmentOrder {
    pub order_id: Uuid,
    pub status: FulfilmentStatus,
    pub warehouse: Option<String>,
    pub placed_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

pub struct Fulfilment;

fn reject(event: &Event, status: FulfilmentStatus) -> Rejection {
    Rejection::new(format!("{:?} for an order that is {status}", event.kind()))
}

impl Projection for Fulfilment {
    type State = FulfilmentOrder;
    const NAME: &'static str = "fulfilment";

    fn wants(kind: EventKind) -> bool {
        matches!(
            kind,
            EventKind::OrderPlaced
                | EventKind::OrderCancelled
                | EventKind::PaymentCaptured
                | EventKind::ShipmentPacked
                | EventKind::ShipmentShipped
                | EventKind::ShipmentDelivered
                | EventKind::OrderRejected
                | EventKind::OrderExpired
        )
    }

    fn apply(state: Option<&FulfilmentOrder>, event: &Event) -> Result<Effect<FulfilmentOrder>, Rejection> {
        let at = event.envelope().occurred_at;
        let Some(order) = state else {
            let status = match event {
                Event::OrderPlaced(_) => FulfilmentStatus::AwaitingPayment,
                Event::OrderRejected(_) => FulfilmentStatus::Rejected,
                Event::OrderExpired(_) => FulfilmentStatus::Expired,
                _ => return Err(Rejection::new(format!("{:?} for an unknown order", event.kind()))),
            };
            let order_id = event.order_id().ok_or_else(|| Rejection::new("an order's event without its order"))?;
            return Ok(Effect::order(FulfilmentOrder {
                order_id,
                status,
                warehouse: None,
                placed_at: at,
                paid_at: None,
                shipped_at: None,
                delivered_at: None,
            }));
        };
        let mut next = order.clone();
        use FulfilmentStatus as S;
        match (event, order.status) {
            // The placement of an order whose decision was read first (see the top).
            (Event::OrderPlaced(_), S::Rejected | S::Expired) if order.paid_at.is_none() => next.placed_at = at,
            (Event::OrderPlaced(_), _) => return Err(Rejection::new("order placed twice with different event ids")),
            (Event::PaymentCaptured(_), S::AwaitingPayment) => {
                next.status = S::ReadyToShip;
                next.paid_at = Some(at);
            }
            // A further (partial) capture changes nothing for the warehouse.
            (Event::PaymentCaptured(_), S::ReadyToShip | S::Packed | S::Shipped | S::Delivered) => {}
            (Event::ShipmentPacked(f), S::ReadyToShip) => {
                next.status = S::Packed;
                next.warehouse = Some(f.warehouse.clone());
            }
            (Event::ShipmentShipped(f), S::ReadyToShip | S::Packed) => {
                next.status = S::Shipped;
                next.warehouse = Some(f.warehouse.clone());
                next.shipped_at = Some(at);
            }
            (Event::ShipmentDelivered(_), S::Shipped) => {
                next.status = S::Delivered;
                next.delivered_at = Some(at);
            }
            (Event::OrderCancelled(_), S::AwaitingPayment | S::ReadyToShip | S::Packed) => {
                next.status = S::Cancelled;
            }
            (Event::OrderRejected(_), S::AwaitingPayment | S::ReadyToShip | S::Packed) => next.status = S::Rejected,
            (Event::OrderExpired(_), S::AwaitingPayment | S::ReadyToShip | S::Packed) => next.status = S::Expired,
            // The order is dead already: a capture is asked back by the order process (it
            // is still when the money came, as it is when the capture was read before the
            // decision: either order of the two topics gives the same row), a cancellation
            // changes nothing.
            (Event::PaymentCaptured(_), S::Rejected | S::Expired) => next.paid_at = order.paid_at.or(Some(at)),
            (Event::OrderCancelled(_), S::Rejected | S::Expired) => {}
            (other, status) => return Err(reject(other, status)),
        }
        Ok(Effect::order(next))
    }
}

#[cfg(test)]
mod decision_tests {
    use super::*;
    use schemas::samples::sample;

    fn placed() -> Option<FulfilmentOrder> {
        Fulfilment::apply(None, &sample(EventKind::OrderPlaced)).expect("placed").order
    }

    #[test]
    fn a_decision_read_before_its_placement_gives_the_row_the_other_order_gives() {
        for decision in [EventKind::OrderRejected, EventKind::OrderExpired] {
            let placed_first = Fulfilment::apply(placed().as_ref(), &sample(decision)).expect("decision").order;
            let decided = Fulfilment::apply(None, &sample(decision)).expect("decision first").order;
            let decided_first =
                Fulfilment::apply(decided.as_ref(), &sample(EventKind::OrderPlaced)).expect("placement").order;
            assert_eq!(decided_first, placed_first, "{decision:?}");
        }
        assert!(Fulfilment::apply(None, &sample(EventKind::PaymentCaptured)).is_err());
    }

    #[test]
    fn a_rejected_or_expired_order_never_ships_and_a_late_capture_changes_nothing() {
        for (decision, status) in [
            (EventKind::OrderRejected, FulfilmentStatus::Rejected),
            (EventKind::OrderExpired, FulfilmentStatus::Expired),
        ] {
            let dead = Fulfilment::apply(placed().as_ref(), &sample(decision)).expect("decision").order;
            assert_eq!(dead.as_ref().map(|o| o.status), Some(status));
            assert!(Fulfilment::apply(dead.as_ref(), &sample(EventKind::ShipmentShipped)).is_err());
            let captured = Fulfilment::apply(dead.as_ref(), &sample(EventKind::PaymentCaptured)).expect("capture");
            assert_eq!(captured.order.as_ref().map(|o| o.status), Some(status));
            // Captured before the decision was read: the same row.
            let paid =
                Fulfilment::apply(placed().as_ref(), &sample(EventKind::PaymentCaptured)).expect("capture").order;
            let paid_then_dead = Fulfilment::apply(paid.as_ref(), &sample(decision)).expect("decision").order;
            assert_eq!(paid_then_dead, captured.order, "{decision:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::samples::sample;

    fn run(kinds: &[EventKind]) -> Result<FulfilmentOrder, Rejection> {
        let mut state: Option<FulfilmentOrder> = None;
        for kind in kinds {
            let effect = Fulfilment::apply(state.as_ref(), &sample(*kind))?;
            if effect.order.is_some() {
                state = effect.order;
            }
        }
        Ok(state.expect("placed"))
    }

    use EventKind::*;

    #[test]
    fn the_happy_path_ends_delivered_with_every_timestamp() {
        let order =
            run(&[OrderPlaced, PaymentCaptured, ShipmentPacked, ShipmentShipped, ShipmentDelivered]).expect("ok");
        assert_eq!(order.status, FulfilmentStatus::Delivered);
        assert_eq!(order.warehouse.as_deref(), Some("BER-1"));
        assert!(order.paid_at.is_some() && order.shipped_at.is_some() && order.delivered_at.is_some());
    }

    #[test]
    fn a_captured_payment_makes_the_order_ready_to_ship() {
        assert_eq!(run(&[OrderPlaced, PaymentCaptured]).expect("ok").status, FulfilmentStatus::ReadyToShip);
    }

    #[test]
    fn nothing_ships_unpaid() {
        assert!(run(&[OrderPlaced, ShipmentPacked]).is_err());
        assert!(run(&[OrderPlaced, ShipmentShipped]).is_err());
    }

    #[test]
    fn an_order_can_be_cancelled_until_it_ships() {
        assert_eq!(
            run(&[OrderPlaced, PaymentCaptured, ShipmentPacked, OrderCancelled]).expect("ok").status,
            FulfilmentStatus::Cancelled
        );
        assert!(run(&[OrderPlaced, PaymentCaptured, ShipmentShipped, OrderCancelled]).is_err());
    }

    #[test]
    fn delivery_before_shipping_is_rejected() {
        assert!(run(&[OrderPlaced, PaymentCaptured, ShipmentDelivered]).is_err());
    }
}
