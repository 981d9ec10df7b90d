//! Inventory: the stock group's decisions as analysts read them. Each decision carries the
//! SKU's levels after it and a version; the SKU row keeps the newest, so every level shown
//! is one the stock group had (available never below zero through orders). Per order, what
//! it holds: reserved, released or shipped.
use schemas::{Event, EventKind, StockDecided, StockOutcome};
use uuid::Uuid;

use super::{Effect, Projection, Rejection, SkuLevel};

status_enum! {
    /// Whether an order's reservation still holds stock.
    ReservationStatus {
        Reserved => "reserved",
        Released => "released",
        Shipped => "shipped",
    }
}

/// What the inventory projection remembers of an order: what it holds, and whether the
/// reservation still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryOrder {
    pub order_id: Uuid,
    pub status: ReservationStatus,
    /// (sku, quantity) reserved (or shipped), one entry per SKU.
    pub lines: Vec<(String, i64)>,
}

pub struct Inventory;

fn level(e: &StockDecided) -> (String, SkuLevel) {
    (e.sku.clone(), SkuLevel { on_hand: e.on_hand, reserved: e.reserved, shipped: e.shipped, version: e.version })
}

impl Projection for Inventory {
    type State = InventoryOrder;
    const NAME: &'static str = "inventory";

    fn wants(kind: EventKind) -> bool {
        kind == EventKind::StockDecided
    }

    fn apply(state: Option<&InventoryOrder>, event: &Event) -> Result<Effect<InventoryOrder>, Rejection> {
        let Event::StockDecided(e) = event else {
            return Err(Rejection::new(format!("inventory does not read {:?}", event.kind())));
        };
        let sku_levels = vec![level(e)];
        let Some(order_id) = e.order_id else { return Ok(Effect { order: None, sku_levels }) };
        let mut order = state.cloned().unwrap_or(InventoryOrder {
            order_id,
            status: ReservationStatus::Released,
            lines: Vec::new(),
        });
        let quantity = i64::from(e.quantity);
        match e.outcome {
            StockOutcome::Reserved => {
                order.lines.retain(|(sku, _)| *sku != e.sku);
                order.lines.push((e.sku.clone(), quantity));
                order.status = ReservationStatus::Reserved;
            }
            StockOutcome::Released => {
                order.lines.retain(|(sku, _)| *sku != e.sku);
                if order.lines.is_empty() && order.status == ReservationStatus::Reserved {
                    order.status = ReservationStatus::Released;
                }
            }
            StockOutcome::Shipped => order.status = ReservationStatus::Shipped,
            StockOutcome::Rejected | StockOutcome::Adjusted => return Ok(Effect { order: None, sku_levels }),
        }
        Ok(Effect { order: Some(order), sku_levels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::samples::sample;

    fn decided(outcome: StockOutcome, sku: &str, version: i64) -> Event {
        let Event::StockDecided(mut e) = sample(EventKind::StockDecided) else { unreachable!() };
        e.outcome = outcome;
        e.sku = sku.into();
        e.version = version;
        Event::StockDecided(e)
    }

    #[test]
    fn a_reservation_holds_the_units_and_shows_the_skus_levels() {
        let effect = Inventory::apply(None, &decided(StockOutcome::Reserved, "SKU-1", 3)).expect("applies");
        assert_eq!(
            effect.sku_levels,
            vec![("SKU-1".into(), SkuLevel { on_hand: 10, reserved: 2, shipped: 0, version: 3 })]
        );
        let order = effect.order.expect("state");
        assert_eq!((order.status, order.lines), (ReservationStatus::Reserved, vec![("SKU-1".into(), 2)]));
    }

    #[test]
    fn releasing_every_line_releases_the_order() {
        let one = Inventory::apply(None, &decided(StockOutcome::Reserved, "SKU-1", 1)).expect("one").order;
        let two = Inventory::apply(one.as_ref(), &decided(StockOutcome::Reserved, "SKU-2", 1)).expect("two").order;
        let less = Inventory::apply(two.as_ref(), &decided(StockOutcome::Released, "SKU-1", 2)).expect("r1").order;
        assert_eq!(less.as_ref().expect("state").status, ReservationStatus::Reserved);
        let none = Inventory::apply(less.as_ref(), &decided(StockOutcome::Released, "SKU-2", 2)).expect("r2").order;
        assert_eq!(none.expect("state").status, ReservationStatus::Released);
    }

    #[test]
    fn rejections_and_adjustments_change_only_the_skus_levels() {
        for outcome in [StockOutcome::Rejected, StockOutcome::Adjusted] {
            let effect = Inventory::apply(None, &decided(outcome, "SKU-1", 4)).expect("applies");
            assert!(effect.order.is_none());
            assert_eq!(effect.sku_levels.len(), 1);
        }
    }

    #[test]
    fn shipping_marks_the_reservation_shipped() {
        let order = Inventory::apply(None, &decided(StockOutcome::Reserved, "SKU-1", 1)).expect("reserve").order;
        let shipped = Inventory::apply(order.as_ref(), &decided(StockOutcome::Shipped, "SKU-1", 2)).expect("ship");
        assert_eq!(shipped.order.expect("state").status, ReservationStatus::Shipped);
    }

    #[test]
    fn order_events_are_not_read() {
        assert!(!Inventory::wants(EventKind::OrderPlaced));
        assert!(Inventory::apply(None, &sample(EventKind::OrderPlaced)).is_err());
    }
}
