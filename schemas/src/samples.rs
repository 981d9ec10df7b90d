//! Deterministic example events, one per kind: for golden vectors, tests and docs.
use chrono::{TimeZone, Utc};
use uuid::Uuid;

use crate::event::*;

fn envelope(n: u128) -> Envelope {
    Envelope {
        event_id: Uuid::from_u128(0x0e0e_0000_0000_4000_8000_0000_0000_0000 + n),
        occurred_at: Utc.timestamp_opt(1_780_000_000 + n as i64, 123_456_000).single().unwrap_or_default(),
        correlation_id: Uuid::from_u128(0xc0c0_0000_0000_4000_8000_0000_0000_0001),
        causation_id: (n > 1).then(|| Uuid::from_u128(0x0e0e_0000_0000_4000_8000_0000_0000_0001)),
    }
}

/// The order every sample belongs to.
pub const SAMPLE_ORDER_ID: Uuid = Uuid::from_u128(0x0d0d_0000_0000_4000_8000_0000_0000_0042);

fn payment(n: u128) -> PaymentFact {
    PaymentFact {
        envelope: envelope(n),
        order_id: SAMPLE_ORDER_ID,
        amount_minor: 4_497,
        provider_ref: "psp-123".into(),
    }
}

fn shipment(n: u128) -> ShipmentFact {
    ShipmentFact {
        envelope: envelope(n),
        order_id: SAMPLE_ORDER_ID,
        warehouse: "BER-1".into(),
        carrier: Some("DHL".into()),
        tracking: (n > 7).then(|| "JD0001".into()),
    }
}

/// One example event of the given kind.
pub fn sample(kind: EventKind) -> Event {
    match kind {
        EventKind::OrderPlaced => Event::OrderPlaced(OrderPlaced {
            envelope: envelope(1),
            order_id: SAMPLE_ORDER_ID,
            customer_id: "c-1".into(),
            currency: "EUR".into(),
            lines: vec![
                OrderLine { sku: "SKU-1".into(), quantity: 2, unit_price_minor: 1_999 },
                OrderLine { sku: "SKU-2".into(), quantity: 1, unit_price_minor: 499 },
            ],
            ship_to: ShipTo { country: "DE".into(), postal_code: Some("10115".into()) },
        }),
        EventKind::OrderCancelled => Event::OrderCancelled(OrderCancelled {
            envelope: envelope(2),
            order_id: SAMPLE_ORDER_ID,
            reason: Some("customer request".into()),
        }),
        EventKind::PaymentAuthorized => Event::PaymentAuthorized(payment(3)),
        EventKind::PaymentCaptured => Event::PaymentCaptured(payment(4)),
        EventKind::PaymentFailed => Event::PaymentFailed(payment(5)),
        EventKind::PaymentRefunded => Event::PaymentRefunded(payment(6)),
        EventKind::ShipmentPacked => Event::ShipmentPacked(shipment(7)),
        EventKind::ShipmentShipped => Event::ShipmentShipped(shipment(8)),
        EventKind::ShipmentDelivered => Event::ShipmentDelivered(shipment(9)),
        EventKind::StockAdjusted => Event::StockAdjusted(StockAdjusted {
            envelope: envelope(10),
            sku: "SKU-1".into(),
            warehouse: "BER-1".into(),
            delta: -3,
            reason: AdjustmentReason::Damaged,
        }),
    }
}
