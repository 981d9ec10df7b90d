//! The bodies of the publishing API and how each becomes exactly one event. Parsing is
//! strict (unknown fields are rejected) and every rule lives in `validation`.
use schemas::{
    AdjustmentReason, Envelope, Event, OrderCancelled, OrderLine, OrderPlaced, PaymentFact, ShipTo, ShipmentFact,
    StockAdjusted,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::validation::{self as v, Checked, FieldError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    pub customer_id: String,
    pub currency: String,
    pub lines: Vec<LineRequest>,
    pub ship_to: ShipToRequest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipToRequest {
    pub country: String,
    #[serde(default)]
    pub postal_code: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelOrderRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    Authorized,
    Captured,
    Failed,
    Refunded,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    pub status: PaymentStatus,
    pub amount_minor: i64,
    pub provider_ref: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShipmentStatus {
    Packed,
    Shipped,
    Delivered,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipmentRequest {
    pub status: ShipmentStatus,
    pub warehouse: String,
    #[serde(default)]
    pub carrier: Option<String>,
    #[serde(default)]
    pub tracking: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustmentRequest {
    pub warehouse: String,
    pub delta: i64,
    pub reason: AdjustmentReason,
}

const MAX_AMOUNT_MINOR: i64 = 100_000_000_000_000;

/// A request that becomes one event about an existing order.
pub trait OrderCommand: serde::de::DeserializeOwned + Send + 'static {
    /// Whether a request without a body means "all fields default".
    const EMPTY_BODY_OK: bool = false;
    fn into_event(self, envelope: Envelope, order_id: Uuid) -> Checked<Event>;
}

impl PlaceOrderRequest {
    pub fn into_event(self, envelope: Envelope, order_id: Uuid) -> Checked<OrderPlaced> {
        v::text("customer_id", &self.customer_id, 64)?;
        v::currency("currency", &self.currency)?;
        if self.lines.is_empty() || self.lines.len() > v::MAX_LINES {
            return Err(FieldError::new("lines", format!("must hold 1 to {} lines", v::MAX_LINES)));
        }
        v::country("ship_to.country", &self.ship_to.country)?;
        v::optional_text("ship_to.postal_code", self.ship_to.postal_code.as_deref(), 16)?;
        let mut lines = Vec::with_capacity(self.lines.len());
        for (i, line) in self.lines.into_iter().enumerate() {
            v::sku(&format!("lines[{i}].sku"), &line.sku)?;
            let quantity = v::in_range(&format!("lines[{i}].quantity"), line.quantity, 1, v::MAX_QUANTITY)?;
            let unit_price_minor = v::in_range(
                &format!("lines[{i}].unit_price_minor"),
                line.unit_price_minor,
                0,
                v::MAX_UNIT_PRICE_MINOR,
            )?;
            lines.push(OrderLine { sku: line.sku, quantity, unit_price_minor });
        }
        let placed = OrderPlaced {
            envelope,
            order_id,
            customer_id: self.customer_id,
            currency: self.currency,
            lines,
            ship_to: ShipTo { country: self.ship_to.country, postal_code: self.ship_to.postal_code },
        };
        // Checked arithmetic: a total that does not fit in i64 is a client error, not a wrap.
        placed.total_minor().ok_or_else(|| FieldError::new("lines", "order total overflows"))?;
        Ok(placed)
    }
}

impl OrderCommand for CancelOrderRequest {
    // A bare POST cancels without a reason.
    const EMPTY_BODY_OK: bool = true;
    fn into_event(self, envelope: Envelope, order_id: Uuid) -> Checked<Event> {
        v::optional_text("reason", self.reason.as_deref(), 500)?;
        Ok(Event::OrderCancelled(OrderCancelled { envelope, reason: self.reason, order_id }))
    }
}

impl OrderCommand for PaymentRequest {
    fn into_event(self, envelope: Envelope, order_id: Uuid) -> Checked<Event> {
        let amount_minor = v::in_range("amount_minor", self.amount_minor, 0, MAX_AMOUNT_MINOR)?;
        v::text("provider_ref", &self.provider_ref, 128)?;
        let fact = PaymentFact { envelope, order_id, amount_minor, provider_ref: self.provider_ref };
        Ok(match self.status {
            PaymentStatus::Authorized => Event::PaymentAuthorized(fact),
            PaymentStatus::Captured => Event::PaymentCaptured(fact),
            PaymentStatus::Failed => Event::PaymentFailed(fact),
            PaymentStatus::Refunded => Event::PaymentRefunded(fact),
        })
    }
}

impl OrderCommand for ShipmentRequest {
    fn into_event(self, envelope: Envelope, order_id: Uuid) -> Checked<Event> {
        v::text("warehouse", &self.warehouse, 64)?;
        v::optional_text("carrier", self.carrier.as_deref(), 64)?;
        v::optional_text("tracking", self.tracking.as_deref(), 128)?;
        let fact = ShipmentFact {
            envelope,
            order_id,
            carrier: self.carrier,
            tracking: self.tracking,
            warehouse: self.warehouse,
        };
        Ok(match self.status {
            ShipmentStatus::Packed => Event::ShipmentPacked(fact),
            ShipmentStatus::Shipped => Event::ShipmentShipped(fact),
            ShipmentStatus::Delivered => Event::ShipmentDelivered(fact),
        })
    }
}

impl StockAdjustmentRequest {
    pub fn into_event(self, envelope: Envelope, sku: String) -> Checked<Event> {
        v::sku("sku", &sku)?;
        v::text("warehouse", &self.warehouse, 64)?;
        let delta = v::in_range("delta", self.delta, -v::MAX_STOCK_DELTA, v::MAX_STOCK_DELTA)?;
        if delta == 0 {
            return Err(FieldError::new("delta", "must not be zero"));
        }
        Ok(Event::StockAdjusted(StockAdjusted { envelope, sku, warehouse: self.warehouse, delta, reason: self.reason }))
    }
}
