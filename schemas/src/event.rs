//! Rust view of the events in `avro/`. Field names and order match the `.avsc` files; the
//! golden-vector tests fail if they drift apart.
//!
//! Every record ends with a required field, never an optional one: apache-avro reads an
//! end-of-input where a union index should be as `null`, so a record cut just before a
//! trailing optional field would decode "successfully". Ending on a required field makes
//! every truncation an error.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Metadata carried by every event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per event. Consumers deduplicate on it; the checkout derives it from the
    /// Idempotency-Key so a retried request yields the same id.
    pub event_id: Uuid,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
}

impl Envelope {
    /// The current time at the precision the log keeps (microseconds), so an event read
    /// back equals the event written.
    pub fn now() -> DateTime<Utc> {
        let now = Utc::now();
        DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipTo {
    pub postal_code: Option<String>,
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub envelope: Envelope,
    pub order_id: Uuid,
    pub customer_id: String,
    pub currency: String,
    pub lines: Vec<OrderLine>,
    pub ship_to: ShipTo,
}

impl OrderPlaced {
    /// Sum of quantity × unit price, or `None` if it overflows i64.
    pub fn total_minor(&self) -> Option<i64> {
        self.lines.iter().try_fold(0i64, |acc, l| {
            i64::from(l.quantity).checked_mul(l.unit_price_minor).and_then(|v| acc.checked_add(v))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub envelope: Envelope,
    pub reason: Option<String>,
    pub order_id: Uuid,
}

/// The body shared by the four payment events; which one it is lives in [`Event`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentFact {
    pub envelope: Envelope,
    pub order_id: Uuid,
    /// In minor units of the order's currency (the order fixes the currency).
    pub amount_minor: i64,
    pub provider_ref: String,
}

/// The body shared by the three shipment events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentFact {
    pub envelope: Envelope,
    pub order_id: Uuid,
    pub carrier: Option<String>,
    pub tracking: Option<String>,
    pub warehouse: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdjustmentReason {
    Received,
    Counted,
    Damaged,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockAdjusted {
    pub envelope: Envelope,
    pub sku: String,
    pub warehouse: String,
    pub delta: i32,
    pub reason: AdjustmentReason,
}

/// Units of one SKU moving between two regions' pools: requested in the giving region
/// (`StockTransferRequested`, on its adjustments topic), received in the other
/// (`StockTransferReceived`, on that region's). Between the two the units are in transit,
/// in neither pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockTransfer {
    pub envelope: Envelope,
    pub transfer_id: Uuid,
    pub sku: String,
    pub units: i32,
    pub from_region: String,
    pub to_region: String,
    pub warehouse: String,
}

/// What the order process asks of the stock group for one SKU of one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StockAction {
    Reserve,
    Release,
    Ship,
}

/// A request to the stock group, on the stock topic, keyed by SKU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockRequested {
    pub envelope: Envelope,
    pub order_id: Uuid,
    pub sku: String,
    /// Units of the SKU in the order (its lines summed).
    pub quantity: i32,
    pub action: StockAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StockOutcome {
    Reserved,
    Rejected,
    Released,
    Shipped,
    Adjusted,
}

/// What the stock group decided, with the SKU's levels after the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockDecided {
    pub envelope: Envelope,
    /// `None` for a stock adjustment.
    pub order_id: Option<Uuid>,
    pub sku: String,
    pub outcome: StockOutcome,
    /// Units reserved, released or shipped; for a rejection the units asked for; for an
    /// adjustment the signed change.
    pub quantity: i32,
    pub on_hand: i64,
    pub reserved: i64,
    pub shipped: i64,
    /// Counts the SKU's decisions, so readers keep the newest levels in whatever order
    /// they read decisions of different orders.
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub envelope: Envelope,
    pub order_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRejected {
    pub envelope: Envelope,
    pub reason: String,
    /// The SKUs that caused the rejection.
    pub skus: Vec<String>,
    pub order_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderExpired {
    pub envelope: Envelope,
    pub reason: String,
    pub order_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRequested {
    pub envelope: Envelope,
    pub amount_minor: i64,
    pub reason: String,
    pub order_id: Uuid,
}

/// Every event of the order lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    OrderPlaced(OrderPlaced),
    OrderCancelled(OrderCancelled),
    PaymentAuthorized(PaymentFact),
    PaymentCaptured(PaymentFact),
    PaymentFailed(PaymentFact),
    PaymentRefunded(PaymentFact),
    ShipmentPacked(ShipmentFact),
    ShipmentShipped(ShipmentFact),
    ShipmentDelivered(ShipmentFact),
    StockAdjusted(StockAdjusted),
    StockRequested(StockRequested),
    StockDecided(StockDecided),
    OrderConfirmed(OrderConfirmed),
    OrderRejected(OrderRejected),
    OrderExpired(OrderExpired),
    RefundRequested(RefundRequested),
    StockTransferRequested(StockTransfer),
    StockTransferReceived(StockTransfer),
}

/// The type of an event without its body; one Avro record (and subject) each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    OrderPlaced,
    OrderCancelled,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    ShipmentPacked,
    ShipmentShipped,
    ShipmentDelivered,
    StockAdjusted,
    StockRequested,
    StockDecided,
    OrderConfirmed,
    OrderRejected,
    OrderExpired,
    RefundRequested,
    StockTransferRequested,
    StockTransferReceived,
}

impl EventKind {
    pub const ALL: [EventKind; 18] = [
        EventKind::OrderPlaced,
        EventKind::OrderCancelled,
        EventKind::PaymentAuthorized,
        EventKind::PaymentCaptured,
        EventKind::PaymentFailed,
        EventKind::PaymentRefunded,
        EventKind::ShipmentPacked,
        EventKind::ShipmentShipped,
        EventKind::ShipmentDelivered,
        EventKind::StockAdjusted,
        EventKind::StockRequested,
        EventKind::StockDecided,
        EventKind::OrderConfirmed,
        EventKind::OrderRejected,
        EventKind::OrderExpired,
        EventKind::RefundRequested,
        EventKind::StockTransferRequested,
        EventKind::StockTransferReceived,
    ];

    /// The Avro record name, without namespace.
    pub fn record_name(self) -> &'static str {
        match self {
            EventKind::OrderPlaced => "OrderPlaced",
            EventKind::OrderCancelled => "OrderCancelled",
            EventKind::PaymentAuthorized => "PaymentAuthorized",
            EventKind::PaymentCaptured => "PaymentCaptured",
            EventKind::PaymentFailed => "PaymentFailed",
            EventKind::PaymentRefunded => "PaymentRefunded",
            EventKind::ShipmentPacked => "ShipmentPacked",
            EventKind::ShipmentShipped => "ShipmentShipped",
            EventKind::ShipmentDelivered => "ShipmentDelivered",
            EventKind::StockAdjusted => "StockAdjusted",
            EventKind::StockRequested => "StockRequested",
            EventKind::StockDecided => "StockDecided",
            EventKind::OrderConfirmed => "OrderConfirmed",
            EventKind::OrderRejected => "OrderRejected",
            EventKind::OrderExpired => "OrderExpired",
            EventKind::RefundRequested => "RefundRequested",
            EventKind::StockTransferRequested => "StockTransferRequested",
            EventKind::StockTransferReceived => "StockTransferReceived",
        }
    }

    /// Whether orderflow's processes decide it (the order process, the stock group): only
    /// their principals may publish it, on the decisions topic.
    pub fn is_decision(self) -> bool {
        matches!(
            self,
            EventKind::StockDecided
                | EventKind::OrderConfirmed
                | EventKind::OrderRejected
                | EventKind::OrderExpired
                | EventKind::RefundRequested
        )
    }

    /// The registry subject (RecordNameStrategy: one topic carries many record types).
    pub fn subject(self) -> String {
        format!("com.orderflow.events.{}", self.record_name())
    }

    pub fn from_subject(subject: &str) -> Option<EventKind> {
        let name = subject.strip_prefix("com.orderflow.events.")?;
        EventKind::ALL.into_iter().find(|k| k.record_name() == name)
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::OrderPlaced(_) => EventKind::OrderPlaced,
            Event::OrderCancelled(_) => EventKind::OrderCancelled,
            Event::PaymentAuthorized(_) => EventKind::PaymentAuthorized,
            Event::PaymentCaptured(_) => EventKind::PaymentCaptured,
            Event::PaymentFailed(_) => EventKind::PaymentFailed,
            Event::PaymentRefunded(_) => EventKind::PaymentRefunded,
            Event::ShipmentPacked(_) => EventKind::ShipmentPacked,
            Event::ShipmentShipped(_) => EventKind::ShipmentShipped,
            Event::ShipmentDelivered(_) => EventKind::ShipmentDelivered,
            Event::StockAdjusted(_) => EventKind::StockAdjusted,
            Event::StockRequested(_) => EventKind::StockRequested,
            Event::StockDecided(_) => EventKind::StockDecided,
            Event::OrderConfirmed(_) => EventKind::OrderConfirmed,
            Event::OrderRejected(_) => EventKind::OrderRejected,
            Event::OrderExpired(_) => EventKind::OrderExpired,
            Event::RefundRequested(_) => EventKind::RefundRequested,
            Event::StockTransferRequested(_) => EventKind::StockTransferRequested,
            Event::StockTransferReceived(_) => EventKind::StockTransferReceived,
        }
    }

    pub fn envelope(&self) -> &Envelope {
        match self {
            Event::OrderPlaced(e) => &e.envelope,
            Event::OrderCancelled(e) => &e.envelope,
            Event::PaymentAuthorized(e)
            | Event::PaymentCaptured(e)
            | Event::PaymentFailed(e)
            | Event::PaymentRefunded(e) => &e.envelope,
            Event::ShipmentPacked(e) | Event::ShipmentShipped(e) | Event::ShipmentDelivered(e) => &e.envelope,
            Event::StockAdjusted(e) => &e.envelope,
            Event::StockRequested(e) => &e.envelope,
            Event::StockDecided(e) => &e.envelope,
            Event::OrderConfirmed(e) => &e.envelope,
            Event::OrderRejected(e) => &e.envelope,
            Event::OrderExpired(e) => &e.envelope,
            Event::RefundRequested(e) => &e.envelope,
            Event::StockTransferRequested(e) | Event::StockTransferReceived(e) => &e.envelope,
        }
    }

    /// The order this event belongs to; `None` for stock adjustments, transfers and their
    /// decisions.
    pub fn order_id(&self) -> Option<Uuid> {
        match self {
            Event::OrderPlaced(e) => Some(e.order_id),
            Event::OrderCancelled(e) => Some(e.order_id),
            Event::PaymentAuthorized(e)
            | Event::PaymentCaptured(e)
            | Event::PaymentFailed(e)
            | Event::PaymentRefunded(e) => Some(e.order_id),
            Event::ShipmentPacked(e) | Event::ShipmentShipped(e) | Event::ShipmentDelivered(e) => Some(e.order_id),
            Event::StockRequested(e) => Some(e.order_id),
            Event::StockDecided(e) => e.order_id,
            Event::OrderConfirmed(e) => Some(e.order_id),
            Event::OrderRejected(e) => Some(e.order_id),
            Event::OrderExpired(e) => Some(e.order_id),
            Event::RefundRequested(e) => Some(e.order_id),
            Event::StockAdjusted(_) | Event::StockTransferRequested(_) | Event::StockTransferReceived(_) => None,
        }
    }

    /// The Kafka record key. All events of one order share the order id as key, so they
    /// land in one partition of each topic, in order; the topics of a pipeline have the same
    /// partition count, so an order's facts and its decisions share a partition number.
    /// Stock adjustments and requests are keyed `sku:<SKU>`, so one SKU's are decided in
    /// log order by one member. Order ids are UUIDs, so the key spaces never collide.
    pub fn key(&self) -> String {
        match self {
            Event::StockAdjusted(e) => format!("sku:{}", e.sku),
            Event::StockRequested(e) => format!("sku:{}", e.sku),
            Event::StockTransferRequested(e) | Event::StockTransferReceived(e) => format!("sku:{}", e.sku),
            Event::StockDecided(StockDecided { order_id: None, sku, .. }) => format!("sku:{sku}"),
            other => other.order_id().map(|id| id.to_string()).unwrap_or_default(),
        }
    }
}
