//! The bodies of the publishing API and how each becomes exactly one event. Parsing is
//! strict (unknown fields are rejected) and every rule lives in `validation`.
use schemas::{
    AdjustmentReason, Envelope, Event, OrderCancelled, OrderLine, OrderPlaced, PaymentFact, ShipTo, ShipmentFact,
    StockAdjusted, StockTransfer,
};
use serde::Deserialize;
use utoipa::openapi::schema::{ArrayBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::validation::{self as v, Checked, FieldError};

// The schemas of checked fields, from the limits the checks below use.
fn text16() -> Schema {
    v::optional_text_schema(16)
}
fn text64() -> Schema {
    v::text_schema(64)
}
fn optional_text64() -> Schema {
    v::optional_text_schema(64)
}
fn text128() -> Schema {
    v::text_schema(128)
}
fn optional_text128() -> Schema {
    v::optional_text_schema(128)
}
fn optional_text500() -> Schema {
    v::optional_text_schema(500)
}
fn quantity() -> Schema {
    v::integer_schema(1, v::MAX_QUANTITY)
}
fn unit_price() -> Schema {
    v::integer_schema(0, v::MAX_UNIT_PRICE_MINOR)
}
fn amount() -> Schema {
    v::integer_schema(0, MAX_AMOUNT_MINOR)
}
fn lines() -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(RefOr::Ref(Ref::from_schema_name("LineRequest")))
        .min_items(Some(1))
        .max_items(Some(v::MAX_LINES))
        .description(Some(
            "One entry per line; the order total (sum of quantity × unit_price_minor) must fit in a signed 64-bit integer",
        ))
        .into()
}
fn stock_delta() -> Schema {
    // Any change within the bounds except none at all.
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(v::integer_schema(-v::MAX_STOCK_DELTA, -1))
        .item(v::integer_schema(1, v::MAX_STOCK_DELTA))
        .into()
}
fn adjustment_reason() -> RefOr<Schema> {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(ADJUSTMENT_REASONS))
        .into()
}

/// The spellings of [`AdjustmentReason`] on the wire.
const ADJUSTMENT_REASONS: [&str; 3] = ["received", "counted", "damaged"];

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    #[schema(schema_with = text64)]
    pub customer_id: String,
    #[schema(schema_with = v::currency_schema)]
    pub currency: String,
    #[schema(schema_with = lines)]
    pub lines: Vec<LineRequest>,
    pub ship_to: ShipToRequest,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    #[schema(schema_with = v::sku_schema)]
    pub sku: String,
    #[schema(schema_with = quantity)]
    #[serde(deserialize_with = "v::integral")]
    pub quantity: i64,
    /// Price of one unit in minor units of the order's currency (cents).
    #[schema(schema_with = unit_price)]
    #[serde(deserialize_with = "v::integral")]
    pub unit_price_minor: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipToRequest {
    #[schema(schema_with = v::country_schema)]
    pub country: String,
    #[serde(default)]
    #[schema(schema_with = text16)]
    pub postal_code: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrderRequest {
    #[serde(default)]
    #[schema(schema_with = optional_text500)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    Authorized,
    Captured,
    Failed,
    Refunded,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    pub status: PaymentStatus,
    #[schema(schema_with = amount)]
    #[serde(deserialize_with = "v::integral")]
    pub amount_minor: i64,
    #[schema(schema_with = text128)]
    pub provider_ref: String,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShipmentStatus {
    Packed,
    Shipped,
    Delivered,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipmentRequest {
    pub status: ShipmentStatus,
    #[schema(schema_with = text64)]
    pub warehouse: String,
    #[serde(default)]
    #[schema(schema_with = optional_text64)]
    pub carrier: Option<String>,
    #[serde(default)]
    #[schema(schema_with = optional_text128)]
    pub tracking: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustmentRequest {
    #[schema(schema_with = text64)]
    pub warehouse: String,
    /// Units added (positive) or removed (negative); never zero.
    #[schema(schema_with = stock_delta)]
    #[serde(deserialize_with = "v::integral")]
    pub delta: i64,
    #[schema(schema_with = adjustment_reason)]
    pub reason: AdjustmentReason,
}

fn transfer_units() -> Schema {
    v::integer_schema(1, v::MAX_STOCK_DELTA)
}

fn region_name() -> Schema {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some("^[a-z][a-z0-9-]{0,31}$"))
        .description(Some("A region's name, as the checkouts are configured with it."))
        .into()
}

/// Units of a SKU leaving this region's pool for another region's
/// (`StockTransferRequested`). This region's stock group dispatches them (from then on they
/// are in transit, in no pool) or refuses the transfer when fewer units are available.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockTransferRequest {
    /// Chosen by the caller, and named again by the receipt in the receiving region.
    pub transfer_id: Uuid,
    #[schema(schema_with = transfer_units)]
    #[serde(deserialize_with = "v::integral")]
    pub units: i64,
    /// The receiving region.
    #[schema(schema_with = region_name)]
    pub to_region: String,
    /// The warehouse the units leave from.
    #[schema(schema_with = text64)]
    pub warehouse: String,
}

/// Units of a transfer arrived in this region's pool (`StockTransferReceived`); counted
/// in once per transfer, however often it is reported.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockReceiptRequest {
    /// The transfer's id, as the giving region was told.
    pub transfer_id: Uuid,
    #[schema(schema_with = transfer_units)]
    #[serde(deserialize_with = "v::integral")]
    pub units: i64,
    /// The giving region.
    #[schema(schema_with = region_name)]
    pub from_region: String,
    /// The warehouse the units arrived at.
    #[schema(schema_with = text64)]
    pub warehouse: String,
}

/// One end of a transfer: the event, checked. `here` is the region of the checkout;
/// `other` the other end's region, which must be one the checkout knows.
fn transfer_event(
    envelope: Envelope,
    sku: String,
    (transfer_id, units, warehouse): (Uuid, i64, String),
    (from, to): (&schemas::Region, &schemas::Region),
) -> Checked<StockTransfer> {
    v::sku("sku", &sku)?;
    v::text("warehouse", &warehouse, 64)?;
    let units = v::in_range("units", units, 1, v::MAX_STOCK_DELTA)?;
    Ok(StockTransfer {
        envelope,
        transfer_id,
        sku,
        units,
        from_region: from.as_str().to_string(),
        to_region: to.as_str().to_string(),
        warehouse,
    })
}

/// The other region of a transfer: a region the checkout knows that is not `here`.
fn other_region(
    field: &str,
    name: &str,
    here: &schemas::Region,
    known: &dyn Fn(&schemas::Region) -> bool,
) -> Checked<schemas::Region> {
    let region = schemas::Region::parse(name).map_err(|e| FieldError::new(field, e.to_string()))?;
    if region == *here {
        return Err(FieldError::new(field, "is this region: a transfer moves units between two regions"));
    }
    if !known(&region) {
        return Err(FieldError::new(field, format!("names no region this checkout knows ({name:?})")));
    }
    Ok(region)
}

impl StockTransferRequest {
    pub fn into_event(
        self,
        envelope: Envelope,
        sku: String,
        here: &schemas::Region,
        known: &dyn Fn(&schemas::Region) -> bool,
    ) -> Checked<Event> {
        let to = other_region("to_region", &self.to_region, here, known)?;
        let transfer = transfer_event(envelope, sku, (self.transfer_id, self.units, self.warehouse), (here, &to))?;
        Ok(Event::StockTransferRequested(transfer))
    }
}

impl StockReceiptRequest {
    pub fn into_event(
        self,
        envelope: Envelope,
        sku: String,
        here: &schemas::Region,
        known: &dyn Fn(&schemas::Region) -> bool,
    ) -> Checked<Event> {
        let from = other_region("from_region", &self.from_region, here, known)?;
        let transfer = transfer_event(envelope, sku, (self.transfer_id, self.units, self.warehouse), (&from, here))?;
        Ok(Event::StockTransferReceived(transfer))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_adjustment_reason_in_the_schema_parses_and_nothing_else_does() {
        for reason in ADJUSTMENT_REASONS {
            let parsed: Result<AdjustmentReason, _> = serde_json::from_value(serde_json::json!(reason));
            assert!(parsed.is_ok(), "{reason}");
        }
        assert!(serde_json::from_value::<AdjustmentReason>(serde_json::json!("stolen")).is_err());
    }
}
