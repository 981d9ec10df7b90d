//! Fulfilment per order: awaiting_payment → ready_to_ship (payment captured) → packed →
//! shipped → delivered, or cancelled before it ships. Nothing ships unpaid: packing or
//! shipping an order that is still awaiting payment is rejected.
use chrono::{DateTime, Utc};
use schemas::{Event, EventKind};
use uuid::Uuid;

use super::{Effect, Projection, Rejection};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FulfilmentOrder {
    pub order_id: Uuid,
    /// awaiting_payment, ready_to_ship, packed, shipped, delivered, cancelled
    pub status: String,
    pub warehouse: Option<String>,
    pub placed_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

pub struct Fulfilment;

fn reject(event: &Event, status: &str) -> Rejection {
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
        )
    }

    fn apply(state: Option<&FulfilmentOrder>, event: &Event) -> Result<Effect<FulfilmentOrder>, Rejection> {
        let at = event.envelope().occurred_at;
        let Some(order) = state else {
            let Event::OrderPlaced(e) = event else {
                return Err(Rejection::new(format!("{:?} for an unknown order", event.kind())));
            };
            return Ok(Effect::order(FulfilmentOrder {
                order_id: e.order_id,
                status: "awaiting_payment".into(),
                warehouse: None,
                placed_at: at,
                paid_at: None,
                shipped_at: None,
                delivered_at: None,
            }));
        };
        let mut next = order.clone();
        match (event, order.status.as_str()) {
            (Event::OrderPlaced(_), _) => return Err(Rejection::new("order placed twice with different event ids")),
            (Event::PaymentCaptured(_), "awaiting_payment") => {
                next.status = "ready_to_ship".into();
                next.paid_at = Some(at);
            }
            // A further (partial) capture changes nothing for the warehouse.
            (Event::PaymentCaptured(_), "ready_to_ship" | "packed" | "shipped" | "delivered") => {}
            (Event::ShipmentPacked(f), "ready_to_ship") => {
                next.status = "packed".into();
                next.warehouse = Some(f.warehouse.clone());
            }
            (Event::ShipmentShipped(f), "ready_to_ship" | "packed") => {
                next.status = "shipped".into();
                next.warehouse = Some(f.warehouse.clone());
                next.shipped_at = Some(at);
            }
            (Event::ShipmentDelivered(_), "shipped") => {
                next.status = "delivered".into();
                next.delivered_at = Some(at);
            }
            (Event::OrderCancelled(_), "awaiting_payment" | "ready_to_ship" | "packed") => {
                next.status = "cancelled".into();
            }
            (other, status) => return Err(reject(other, status)),
        }
        Ok(Effect::order(next))
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
        assert_eq!(order.status, "delivered");
        assert_eq!(order.warehouse.as_deref(), Some("BER-1"));
        assert!(order.paid_at.is_some() && order.shipped_at.is_some() && order.delivered_at.is_some());
    }

    #[test]
    fn a_captured_payment_makes_the_order_ready_to_ship() {
        assert_eq!(run(&[OrderPlaced, PaymentCaptured]).expect("ok").status, "ready_to_ship");
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
            "cancelled"
        );
        assert!(run(&[OrderPlaced, PaymentCaptured, ShipmentShipped, OrderCancelled]).is_err());
    }

    #[test]
    fn delivery_before_shipping_is_rejected() {
        assert!(run(&[OrderPlaced, PaymentCaptured, ShipmentDelivered]).is_err());
    }
}
