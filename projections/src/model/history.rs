//! Order history: every event of an order with its log position, in log order. It never
//! rejects (it records what happened, valid or not), so the timeline can show an event
//! that another projection parked.
use schemas::{Event, EventKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Effect, LogPosition, Projection, Rejection};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub event_id: Uuid,
    /// The Avro record name, e.g. `PaymentCaptured`.
    pub kind: String,
    pub occurred_at_us: i64,
    pub partition: i32,
    pub offset: i64,
    /// One human line: amounts, warehouse, reason.
    pub summary: String,
    /// The principal that published it; null when the record did not say (a producer
    /// writing straight to the topic, or a release before principals were recorded).
    pub published_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderHistory {
    pub order_id: Uuid,
    pub events: Vec<HistoryEntry>,
}

pub struct History;

/// Position recorded when `apply` is called without one (only in unit tests).
const UNKNOWN: LogPosition = LogPosition { partition: -1, offset: -1 };

fn summary(event: &Event) -> String {
    match event {
        Event::OrderPlaced(e) => {
            let total = e.total_minor().map_or_else(|| "overflowing".to_string(), |t| t.to_string());
            format!("{} line(s), total {total} {} (minor units), customer {}", e.lines.len(), e.currency, e.customer_id)
        }
        Event::OrderCancelled(e) => format!("reason: {}", e.reason.as_deref().unwrap_or("none given")),
        Event::PaymentAuthorized(f)
        | Event::PaymentCaptured(f)
        | Event::PaymentFailed(f)
        | Event::PaymentRefunded(f) => {
            format!("amount {} (minor units), provider ref {}", f.amount_minor, f.provider_ref)
        }
        Event::ShipmentPacked(f) | Event::ShipmentShipped(f) | Event::ShipmentDelivered(f) => {
            format!(
                "warehouse {}{}",
                f.warehouse,
                f.carrier.as_deref().map(|c| format!(", carrier {c}")).unwrap_or_default()
            )
        }
        Event::StockAdjusted(e) => format!("{} {:+}", e.sku, e.delta),
        Event::StockTransferRequested(t) | Event::StockTransferReceived(t) => {
            format!("{} × {} from {} to {} (transfer {})", t.units, t.sku, t.from_region, t.to_region, t.transfer_id)
        }
        Event::StockRequested(e) => format!("{:?} {} × {}", e.action, e.quantity, e.sku).to_lowercase(),
        Event::StockDecided(e) => format!(
            "{} {:?} {} (on hand {}, reserved {}, available {})",
            e.sku,
            e.outcome,
            e.quantity,
            e.on_hand,
            e.reserved,
            e.on_hand - e.reserved
        )
        .to_lowercase(),
        Event::OrderConfirmed(_) => "every line reserved; waiting for payment".into(),
        Event::OrderRejected(e) => e.reason.clone(),
        Event::OrderExpired(e) => e.reason.clone(),
        Event::RefundRequested(e) => format!("refund {} (minor units): {}", e.amount_minor, e.reason),
    }
}

impl Projection for History {
    type State = OrderHistory;
    const NAME: &'static str = "history";

    /// Every event of an order: its facts and the decisions about it (the stock group's
    /// requests are the processes' conversation, and stock moves are no order's).
    fn wants(kind: EventKind) -> bool {
        !matches!(
            kind,
            EventKind::StockAdjusted
                | EventKind::StockRequested
                | EventKind::StockTransferRequested
                | EventKind::StockTransferReceived
        )
    }

    fn apply(state: Option<&OrderHistory>, event: &Event) -> Result<Effect<OrderHistory>, Rejection> {
        Self::apply_at(state, event, UNKNOWN, None)
    }

    fn apply_at(
        state: Option<&OrderHistory>,
        event: &Event,
        at: LogPosition,
        published_by: Option<&str>,
    ) -> Result<Effect<OrderHistory>, Rejection> {
        // A stock decision about no order (an adjustment's) has no timeline to join.
        let Some(order_id) = event.order_id() else { return Ok(Effect::none()) };
        let envelope = event.envelope();
        let mut next = state.cloned().unwrap_or(OrderHistory { order_id, events: Vec::new() });
        if next.events.iter().any(|e| e.event_id == envelope.event_id) {
            // The same event published twice: recorded once.
            return Ok(Effect::none());
        }
        next.events.push(HistoryEntry {
            event_id: envelope.event_id,
            kind: event.kind().record_name().to_string(),
            occurred_at_us: envelope.occurred_at.timestamp_micros(),
            partition: at.partition,
            offset: at.offset,
            summary: summary(event),
            published_by: published_by.map(str::to_string),
        });
        Ok(Effect::order(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::samples::sample;

    #[test]
    fn every_order_event_is_recorded_with_its_position_and_publisher_in_log_order() {
        let at = LogPosition { partition: 3, offset: 10 };
        let placed = History::apply_at(None, &sample(EventKind::OrderPlaced), at, Some("shop"))
            .expect("placed")
            .order
            .expect("state");
        let paid = History::apply_at(
            Some(&placed),
            &sample(EventKind::PaymentCaptured),
            LogPosition { partition: 3, offset: 12 },
            None,
        )
        .expect("paid")
        .order
        .expect("state");
        let kinds: Vec<(&str, i64)> = paid.events.iter().map(|e| (e.kind.as_str(), e.offset)).collect();
        assert_eq!(kinds, [("OrderPlaced", 10), ("PaymentCaptured", 12)]);
        assert!(paid.events[0].summary.contains("total 4497 EUR"), "{}", paid.events[0].summary);
        let publishers: Vec<Option<&str>> = paid.events.iter().map(|e| e.published_by.as_deref()).collect();
        assert_eq!(publishers, [Some("shop"), None], "an event without the header has no known publisher");
    }

    #[test]
    fn the_same_event_twice_is_recorded_once() {
        let event = sample(EventKind::OrderPlaced);
        let once = History::apply(None, &event).expect("placed").order.expect("state");
        assert_eq!(History::apply(Some(&once), &event).expect("again").order, None);
    }

    #[test]
    fn events_no_projection_accepts_are_still_recorded() {
        // A capture for an order never placed: the payment projection parks it, history keeps it.
        let state = History::apply(None, &sample(EventKind::PaymentCaptured)).expect("recorded").order.expect("state");
        assert_eq!(state.events.len(), 1);
    }
}
