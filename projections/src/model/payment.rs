//! Payments per order: the order's total and currency from the placed event, amounts
//! authorized, captured and refunded, and a status. Money is integer minor units with
//! checked arithmetic; capturing more than the order total or refunding more than was
//! captured is rejected.
use chrono::{DateTime, Utc};
use schemas::{Event, EventKind, PaymentFact};
use uuid::Uuid;

use super::{Effect, Projection, Rejection};

status_enum! {
    /// Where an order's payment stands.
    PaymentStatus {
        Pending => "pending",
        Authorized => "authorized",
        Captured => "captured",
        Failed => "failed",
        Refunded => "refunded",
        PartiallyRefunded => "partially_refunded",
        Cancelled => "cancelled",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PaymentOrder {
    pub order_id: Uuid,
    pub currency: String,
    pub order_total_minor: i64,
    pub authorized_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub status: PaymentStatus,
    pub placed_at: DateTime<Utc>,
    /// When the last capture happened: revenue per day counts captures by this day.
    pub captured_at: Option<DateTime<Utc>>,
}

pub struct Payment;

fn add(a: i64, b: i64, what: &str) -> Result<i64, Rejection> {
    a.checked_add(b).ok_or_else(|| Rejection::new(format!("{what} overflows")))
}

fn with_payment(
    order: &PaymentOrder,
    fact: &PaymentFact,
    change: impl FnOnce(&mut PaymentOrder, i64) -> Result<(), Rejection>,
) -> Result<Effect<PaymentOrder>, Rejection> {
    if order.status == PaymentStatus::Cancelled {
        return Err(Rejection::new("payment reported for a cancelled order"));
    }
    let mut next = order.clone();
    change(&mut next, fact.amount_minor)?;
    Ok(Effect::order(next))
}

impl Projection for Payment {
    type State = PaymentOrder;
    const NAME: &'static str = "payment";

    fn wants(kind: EventKind) -> bool {
        matches!(
            kind,
            EventKind::OrderPlaced
                | EventKind::OrderCancelled
                | EventKind::PaymentAuthorized
                | EventKind::PaymentCaptured
                | EventKind::PaymentFailed
                | EventKind::PaymentRefunded
        )
    }

    fn apply(state: Option<&PaymentOrder>, event: &Event) -> Result<Effect<PaymentOrder>, Rejection> {
        let Some(order) = state else {
            let Event::OrderPlaced(e) = event else {
                return Err(Rejection::new(format!("{:?} for an unknown order", event.kind())));
            };
            let total = e.total_minor().ok_or_else(|| Rejection::new("order total overflows"))?;
            return Ok(Effect::order(PaymentOrder {
                order_id: e.order_id,
                currency: e.currency.clone(),
                order_total_minor: total,
                authorized_minor: 0,
                captured_minor: 0,
                refunded_minor: 0,
                status: PaymentStatus::Pending,
                placed_at: e.envelope.occurred_at,
                captured_at: None,
            }));
        };
        match event {
            Event::OrderPlaced(_) => Err(Rejection::new("order placed twice with different event ids")),
            Event::OrderCancelled(_) => {
                Ok(Effect::order(PaymentOrder { status: PaymentStatus::Cancelled, ..order.clone() }))
            }
            Event::PaymentAuthorized(f) => with_payment(order, f, |o, amount| {
                o.authorized_minor = add(o.authorized_minor, amount, "authorized amount")?;
                if o.captured_minor == 0 {
                    o.status = PaymentStatus::Authorized;
                }
                Ok(())
            }),
            Event::PaymentCaptured(f) => with_payment(order, f, |o, amount| {
                let captured = add(o.captured_minor, amount, "captured amount")?;
                if captured > o.order_total_minor {
                    return Err(Rejection::new(format!(
                        "capture of {amount} brings the captured total to {captured}, above the order total {}",
                        o.order_total_minor
                    )));
                }
                o.captured_minor = captured;
                o.status = PaymentStatus::Captured;
                o.captured_at = Some(f.envelope.occurred_at);
                Ok(())
            }),
            Event::PaymentFailed(f) => with_payment(order, f, |o, _| {
                if o.captured_minor > 0 {
                    return Err(Rejection::new("payment failure reported after a capture"));
                }
                o.status = PaymentStatus::Failed;
                Ok(())
            }),
            Event::PaymentRefunded(f) => with_payment(order, f, |o, amount| {
                let refunded = add(o.refunded_minor, amount, "refunded amount")?;
                if refunded > o.captured_minor {
                    return Err(Rejection::new(format!(
                        "refund total {refunded} exceeds captured {}",
                        o.captured_minor
                    )));
                }
                o.refunded_minor = refunded;
                o.status = if refunded == o.captured_minor {
                    PaymentStatus::Refunded
                } else {
                    PaymentStatus::PartiallyRefunded
                };
                Ok(())
            }),
            other => Err(Rejection::new(format!("payment does not read {:?}", other.kind()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::samples::sample;

    fn placed() -> PaymentOrder {
        Payment::apply(None, &sample(EventKind::OrderPlaced)).expect("placed").order.expect("state")
    }

    fn then(state: &PaymentOrder, kind: EventKind) -> Result<PaymentOrder, Rejection> {
        Payment::apply(Some(state), &sample(kind)).map(|e| e.order.expect("state"))
    }

    #[test]
    fn a_placed_order_is_pending_with_its_total() {
        let order = placed();
        assert_eq!(
            (order.order_total_minor, order.status, order.currency.as_str()),
            (4497, PaymentStatus::Pending, "EUR")
        );
    }

    #[test]
    fn authorize_capture_refund_add_up() {
        let order = then(&placed(), EventKind::PaymentAuthorized).expect("auth");
        assert_eq!((order.authorized_minor, order.status), (4497, PaymentStatus::Authorized));
        let order = then(&order, EventKind::PaymentCaptured).expect("capture");
        assert_eq!((order.captured_minor, order.status), (4497, PaymentStatus::Captured));
        assert_eq!(order.captured_at, Some(sample(EventKind::PaymentCaptured).envelope().occurred_at));
        let order = then(&order, EventKind::PaymentRefunded).expect("refund");
        assert_eq!((order.refunded_minor, order.status), (4497, PaymentStatus::Refunded));
    }

    #[test]
    fn capturing_more_than_the_total_is_rejected() {
        let order = then(&placed(), EventKind::PaymentCaptured).expect("capture");
        assert!(then(&order, EventKind::PaymentCaptured).is_err());
    }

    #[test]
    fn refunding_more_than_captured_is_rejected() {
        assert!(then(&placed(), EventKind::PaymentRefunded).is_err());
    }

    #[test]
    fn a_payment_for_an_unknown_order_is_rejected() {
        assert!(Payment::apply(None, &sample(EventKind::PaymentCaptured)).is_err());
    }

    #[test]
    fn payments_after_cancellation_are_rejected() {
        let cancelled = then(&placed(), EventKind::OrderCancelled).expect("cancel");
        assert_eq!(cancelled.status, PaymentStatus::Cancelled);
        assert!(then(&cancelled, EventKind::PaymentCaptured).is_err());
    }
}
