//! Inventory: stock adjustments change on hand; a placed order reserves its quantities;
//! cancelling releases them; shipping moves them from reserved to shipped and out of on
//! hand. available = on_hand − reserved, and may go negative (oversold, visible).
use schemas::{Event, EventKind};
use uuid::Uuid;

use super::{Effect, Projection, Rejection, SkuDelta};

status_enum! {
    /// Whether an order's reservation still holds stock.
    ReservationStatus {
        Reserved => "reserved",
        Released => "released",
        Shipped => "shipped",
    }
}

/// What the inventory projection remembers of an order: what it reserved, and whether the
/// reservation still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryOrder {
    pub order_id: Uuid,
    pub status: ReservationStatus,
    /// (sku, quantity), one entry per SKU.
    pub lines: Vec<(String, i64)>,
}

pub struct Inventory;

fn per_sku(lines: &[(String, i64)], delta: impl Fn(i64) -> SkuDelta) -> Vec<(String, SkuDelta)> {
    lines.iter().map(|(sku, qty)| (sku.clone(), delta(*qty))).collect()
}

impl Projection for Inventory {
    type State = InventoryOrder;
    const NAME: &'static str = "inventory";

    fn wants(kind: EventKind) -> bool {
        matches!(
            kind,
            EventKind::OrderPlaced | EventKind::OrderCancelled | EventKind::ShipmentShipped | EventKind::StockAdjusted
        )
    }

    fn apply(state: Option<&InventoryOrder>, event: &Event) -> Result<Effect<InventoryOrder>, Rejection> {
        match (event, state) {
            (Event::StockAdjusted(e), _) => Ok(Effect {
                order: None,
                sku_deltas: vec![(e.sku.clone(), SkuDelta { on_hand: i64::from(e.delta), ..SkuDelta::default() })],
            }),
            (Event::OrderPlaced(e), None) => {
                let mut lines: Vec<(String, i64)> = Vec::new();
                for line in &e.lines {
                    match lines.iter_mut().find(|(sku, _)| *sku == line.sku) {
                        Some((_, qty)) => *qty += i64::from(line.quantity),
                        None => lines.push((line.sku.clone(), i64::from(line.quantity))),
                    }
                }
                let sku_deltas = per_sku(&lines, |q| SkuDelta { reserved: q, ..SkuDelta::default() });
                Ok(Effect {
                    order: Some(InventoryOrder { order_id: e.order_id, status: ReservationStatus::Reserved, lines }),
                    sku_deltas,
                })
            }
            (Event::OrderPlaced(_), Some(_)) => Err(Rejection::new("order placed twice with different event ids")),
            (Event::OrderCancelled(_), Some(o)) if o.status == ReservationStatus::Reserved => Ok(Effect {
                sku_deltas: per_sku(&o.lines, |q| SkuDelta { reserved: -q, ..SkuDelta::default() }),
                order: Some(InventoryOrder { status: ReservationStatus::Released, ..o.clone() }),
            }),
            (Event::ShipmentShipped(_), Some(o)) if o.status == ReservationStatus::Reserved => Ok(Effect {
                sku_deltas: per_sku(&o.lines, |q| SkuDelta { on_hand: -q, reserved: -q, shipped: q }),
                order: Some(InventoryOrder { status: ReservationStatus::Shipped, ..o.clone() }),
            }),
            (Event::OrderCancelled(_) | Event::ShipmentShipped(_), Some(o)) => Err(Rejection::new(format!(
                "{:?} for an order whose reservation is {}",
                event.kind(),
                o.status.as_str()
            ))),
            (Event::OrderCancelled(_) | Event::ShipmentShipped(_), None) => {
                Err(Rejection::new(format!("{:?} for an unknown order", event.kind())))
            }
            (other, _) => Err(Rejection::new(format!("inventory does not read {:?}", other.kind()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::samples::sample;

    fn placed() -> Event {
        sample(EventKind::OrderPlaced)
    }

    fn delta(on_hand: i64, reserved: i64, shipped: i64) -> SkuDelta {
        SkuDelta { on_hand, reserved, shipped }
    }

    #[test]
    fn placing_an_order_reserves_each_line() {
        let effect = Inventory::apply(None, &placed()).expect("applies");
        assert_eq!(effect.sku_deltas, vec![("SKU-1".into(), delta(0, 2, 0)), ("SKU-2".into(), delta(0, 1, 0))]);
        assert_eq!(effect.order.expect("state").status, ReservationStatus::Reserved);
    }

    #[test]
    fn cancelling_releases_the_reservation() {
        let order = Inventory::apply(None, &placed()).expect("placed").order;
        let effect = Inventory::apply(order.as_ref(), &sample(EventKind::OrderCancelled)).expect("cancel");
        assert_eq!(effect.sku_deltas, vec![("SKU-1".into(), delta(0, -2, 0)), ("SKU-2".into(), delta(0, -1, 0))]);
        assert_eq!(effect.order.expect("state").status, ReservationStatus::Released);
    }

    #[test]
    fn shipping_moves_stock_from_reserved_and_on_hand_to_shipped() {
        let order = Inventory::apply(None, &placed()).expect("placed").order;
        let effect = Inventory::apply(order.as_ref(), &sample(EventKind::ShipmentShipped)).expect("ship");
        assert_eq!(effect.sku_deltas[0], ("SKU-1".into(), delta(-2, -2, 2)));
    }

    #[test]
    fn cancelling_after_shipping_is_rejected() {
        let order = Inventory::apply(None, &placed()).expect("placed").order;
        let shipped = Inventory::apply(order.as_ref(), &sample(EventKind::ShipmentShipped)).expect("ship").order;
        assert!(Inventory::apply(shipped.as_ref(), &sample(EventKind::OrderCancelled)).is_err());
    }

    #[test]
    fn events_for_unknown_orders_are_rejected() {
        assert!(Inventory::apply(None, &sample(EventKind::OrderCancelled)).is_err());
        assert!(Inventory::apply(None, &sample(EventKind::ShipmentShipped)).is_err());
    }

    #[test]
    fn stock_adjustments_change_on_hand_only() {
        let effect = Inventory::apply(None, &sample(EventKind::StockAdjusted)).expect("adjust");
        assert_eq!(effect.sku_deltas, vec![("SKU-1".into(), delta(-3, 0, 0))]);
        assert!(effect.order.is_none());
    }

    #[test]
    fn repeated_skus_in_one_order_are_summed() {
        let Event::OrderPlaced(mut e) = placed() else { unreachable!() };
        e.lines[1].sku = "SKU-1".into();
        let effect = Inventory::apply(None, &Event::OrderPlaced(e)).expect("placed");
        assert_eq!(effect.sku_deltas, vec![("SKU-1".into(), delta(0, 3, 0))]);
    }
}
