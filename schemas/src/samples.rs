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
fn transfer(n: u128) -> StockTransfer {
    StockTransfer {
        envelope: envelope(n),
        transfer_id: Uuid::from_u128(0x7a),
        sku: "SKU-1".into(),
        units: 4,
        from_region: "eu".into(),
        to_region: "us".into(),
        warehouse: "BER-1".into(),
    }
}

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
        EventKind::StockTransferRequested => Event::StockTransferRequested(transfer(17)),
        EventKind::StockTransferReceived => Event::StockTransferReceived(transfer(18)),
        EventKind::StockRequested => Event::StockRequested(StockRequested {
            envelope: envelope(11),
            order_id: SAMPLE_ORDER_ID,
            sku: "SKU-1".into(),
            quantity: 2,
            action: StockAction::Reserve,
        }),
        EventKind::StockDecided => Event::StockDecided(StockDecided {
            envelope: envelope(12),
            order_id: Some(SAMPLE_ORDER_ID),
            sku: "SKU-1".into(),
            outcome: StockOutcome::Reserved,
            quantity: 2,
            on_hand: 10,
            reserved: 2,
            shipped: 0,
            version: 3,
        }),
        EventKind::OrderConfirmed => {
            Event::OrderConfirmed(OrderConfirmed { envelope: envelope(13), order_id: SAMPLE_ORDER_ID })
        }
        EventKind::OrderRejected => Event::OrderRejected(OrderRejected {
            envelope: envelope(14),
            reason: "out of stock: SKU-2 (1 requested, 0 available)".into(),
            skus: vec!["SKU-2".into()],
            order_id: SAMPLE_ORDER_ID,
        }),
        EventKind::OrderExpired => Event::OrderExpired(OrderExpired {
            envelope: envelope(15),
            reason: "not paid within 15m".into(),
            order_id: SAMPLE_ORDER_ID,
        }),
        EventKind::RefundRequested => Event::RefundRequested(RefundRequested {
            envelope: envelope(16),
            amount_minor: 4_497,
            reason: "cancelled after capture".into(),
            order_id: SAMPLE_ORDER_ID,
        }),
    }
}

/// The sample events of a full lifecycle (placed, authorized, captured, packed, shipped,
/// delivered), re-addressed to `order_id` with fresh event ids.
pub fn lifecycle(order_id: Uuid) -> Vec<Event> {
    LIFECYCLE.into_iter().map(|kind| readdressed(sample(kind), order_id)).collect()
}

/// The kinds of a full, happy order lifecycle, in order.
pub const LIFECYCLE: [EventKind; 6] = [
    EventKind::OrderPlaced,
    EventKind::PaymentAuthorized,
    EventKind::PaymentCaptured,
    EventKind::ShipmentPacked,
    EventKind::ShipmentShipped,
    EventKind::ShipmentDelivered,
];

/// `event` with another order id and a fresh envelope (new event id, now).
pub fn readdressed(mut event: Event, order_id: Uuid) -> Event {
    let envelope = Envelope {
        event_id: Uuid::new_v4(),
        occurred_at: Envelope::now(),
        correlation_id: order_id,
        causation_id: None,
    };
    match &mut event {
        Event::OrderPlaced(e) => (e.envelope, e.order_id) = (envelope, order_id),
        Event::OrderCancelled(e) => (e.envelope, e.order_id) = (envelope, order_id),
        Event::PaymentAuthorized(e)
        | Event::PaymentCaptured(e)
        | Event::PaymentFailed(e)
        | Event::PaymentRefunded(e) => (e.envelope, e.order_id) = (envelope, order_id),
        Event::ShipmentPacked(e) | Event::ShipmentShipped(e) | Event::ShipmentDelivered(e) => {
            (e.envelope, e.order_id) = (envelope, order_id)
        }
        Event::StockRequested(e) => (e.envelope, e.order_id) = (envelope, order_id),
        Event::StockDecided(e) => (e.envelope, e.order_id) = (envelope, e.order_id.map(|_| order_id)),
        Event::OrderConfirmed(e) => (e.envelope, e.order_id) = (envelope, order_id),
        Event::OrderRejected(e) => (e.envelope, e.order_id) = (envelope, order_id),
        Event::OrderExpired(e) => (e.envelope, e.order_id) = (envelope, order_id),
        Event::RefundRequested(e) => (e.envelope, e.order_id) = (envelope, order_id),
        Event::StockAdjusted(e) => e.envelope = envelope,
        Event::StockTransferRequested(e) | Event::StockTransferReceived(e) => e.envelope = envelope,
    }
    event
}

/// Avro's zig-zag varint of a long, for crafting hostile bytes in tests.
pub fn zigzag(n: i64) -> Vec<u8> {
    let mut v = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}
