//! How each projection's per-order state maps to its table. One small impl per state;
//! the batch code reads and writes any of them the same way.
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use super::error::StoreError;
use super::sql::Binder;
use crate::model::fulfilment::{FulfilmentOrder, FulfilmentStatus};
use crate::model::history::{HistoryEntry, OrderHistory};
use crate::model::inventory::{InventoryOrder, ReservationStatus};
use crate::model::payment::{PaymentOrder, PaymentStatus};

/// How a projection's per-order state maps to rows: one row per order, replaced as the
/// order changes, or (`APPEND_ONLY`) rows only ever added, one per entry of the state.
pub trait StoredState: Sized {
    const TABLE: &'static str;
    /// Column names; the first is the key, `order_id`.
    const COLUMNS: &'static [&'static str];
    /// The state is a list of entries that only grows (the history): a batch writes the
    /// entries it added and never reads the order's earlier ones. The table's key holds
    /// the event id, so an entry is its own duplicate guard (no `processed_events` row).
    const APPEND_ONLY: bool = false;
    /// The row keeps the ids of the events applied to it (`event_ids`, see
    /// [`super::fold::EVENT_IDS`]): a copy of one of them is recognised on the row the
    /// batch loads anyway, without an insert into `processed_events` per event.
    const KEEPS_EVENT_IDS: bool = !Self::APPEND_ONLY;
    fn order_id(&self) -> Uuid;
    /// Rows this state writes: 1, or its entries for an append-only state.
    fn row_count(&self) -> usize {
        1
    }
    /// Binds the values of row `index` (< `row_count`).
    fn push_binds<B: Binder>(&self, index: usize, values: &mut B);
    fn from_row(row: &AnyRow) -> Result<Self, StoreError>;
}

fn corrupt(table: &'static str, reason: impl ToString) -> StoreError {
    StoreError::CorruptRow { table, reason: reason.to_string() }
}

fn uuid_of(table: &'static str, row: &AnyRow) -> Result<Uuid, StoreError> {
    let raw: String = row.try_get("order_id")?;
    Uuid::parse_str(&raw).map_err(|e| corrupt(table, e))
}

fn status_of<T>(table: &'static str, row: &AnyRow, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    let raw: String = row.try_get("status")?;
    parse(&raw).ok_or_else(|| corrupt(table, format!("status {raw:?}")))
}

/// The `region` column: the order's home region, as its id names it (NULL for an id that
/// names none: an order placed before regions, or by a producer outside the checkout).
fn home_region(order_id: &Uuid) -> Option<String> {
    schemas::Region::home_of(order_id).map(|r| r.to_string())
}

fn micros(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_micros())
}

fn time_of(table: &'static str, row: &AnyRow, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let raw: Option<i64> = row.try_get(column)?;
    raw.map(|us| DateTime::from_timestamp_micros(us).ok_or_else(|| corrupt(table, format!("{column} out of range"))))
        .transpose()
}

impl StoredState for InventoryOrder {
    const TABLE: &'static str = "inventory_orders";
    const COLUMNS: &'static [&'static str] = &["order_id", "status", "lines", "region"];

    fn order_id(&self) -> Uuid {
        self.order_id
    }

    fn push_binds<B: Binder>(&self, _: usize, values: &mut B) {
        let lines = serde_json::to_string(&self.lines).unwrap_or_else(|_| "[]".into());
        values
            .cell(self.order_id.to_string())
            .cell(self.status.as_str().to_string())
            .cell(lines)
            .cell(home_region(&self.order_id));
    }

    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let lines: String = row.try_get("lines")?;
        Ok(InventoryOrder {
            order_id: uuid_of(Self::TABLE, row)?,
            status: status_of(Self::TABLE, row, ReservationStatus::parse)?,
            lines: serde_json::from_str(&lines).map_err(|e| corrupt(Self::TABLE, e))?,
        })
    }
}

impl StoredState for PaymentOrder {
    const TABLE: &'static str = "payment_orders";
    const COLUMNS: &'static [&'static str] = &[
        "order_id",
        "currency",
        "order_total_minor",
        "authorized_minor",
        "captured_minor",
        "refunded_minor",
        "status",
        "placed_at_us",
        "captured_at_us",
        "region",
    ];

    fn order_id(&self) -> Uuid {
        self.order_id
    }

    fn push_binds<B: Binder>(&self, _: usize, values: &mut B) {
        values
            .cell(self.order_id.to_string())
            .cell(self.currency.clone())
            .cell(self.order_total_minor)
            .cell(self.authorized_minor)
            .cell(self.captured_minor)
            .cell(self.refunded_minor)
            .cell(self.status.as_str().to_string())
            .cell(self.placed_at.timestamp_micros())
            .cell(micros(self.captured_at))
            .cell(home_region(&self.order_id));
    }

    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(PaymentOrder {
            order_id: uuid_of(Self::TABLE, row)?,
            currency: row.try_get("currency")?,
            order_total_minor: row.try_get("order_total_minor")?,
            authorized_minor: row.try_get("authorized_minor")?,
            captured_minor: row.try_get("captured_minor")?,
            refunded_minor: row.try_get("refunded_minor")?,
            status: status_of(Self::TABLE, row, PaymentStatus::parse)?,
            placed_at: time_of(Self::TABLE, row, "placed_at_us")?
                .ok_or_else(|| corrupt(Self::TABLE, "placed_at_us is null"))?,
            captured_at: time_of(Self::TABLE, row, "captured_at_us")?,
        })
    }
}

impl StoredState for FulfilmentOrder {
    const TABLE: &'static str = "fulfilment_orders";
    const COLUMNS: &'static [&'static str] = &[
        "order_id",
        "status",
        "warehouse",
        "placed_at_us",
        "paid_at_us",
        "shipped_at_us",
        "delivered_at_us",
        "region",
    ];

    fn order_id(&self) -> Uuid {
        self.order_id
    }

    fn push_binds<B: Binder>(&self, _: usize, values: &mut B) {
        values
            .cell(self.order_id.to_string())
            .cell(self.status.as_str().to_string())
            .cell(self.warehouse.clone())
            .cell(self.placed_at.timestamp_micros())
            .cell(micros(self.paid_at))
            .cell(micros(self.shipped_at))
            .cell(micros(self.delivered_at))
            .cell(home_region(&self.order_id));
    }

    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(FulfilmentOrder {
            order_id: uuid_of(Self::TABLE, row)?,
            status: status_of(Self::TABLE, row, FulfilmentStatus::parse)?,
            warehouse: row.try_get("warehouse")?,
            placed_at: time_of(Self::TABLE, row, "placed_at_us")?
                .ok_or_else(|| corrupt(Self::TABLE, "placed_at_us is null"))?,
            paid_at: time_of(Self::TABLE, row, "paid_at_us")?,
            shipped_at: time_of(Self::TABLE, row, "shipped_at_us")?,
            delivered_at: time_of(Self::TABLE, row, "delivered_at_us")?,
        })
    }
}

impl StoredState for OrderHistory {
    const TABLE: &'static str = "history_entries";
    const COLUMNS: &'static [&'static str] = &[
        "order_id",
        "event_id",
        "kind",
        "occurred_at_us",
        "partition_id",
        "record_offset",
        "summary",
        "published_by",
        "region",
    ];
    const APPEND_ONLY: bool = true;

    fn order_id(&self) -> Uuid {
        self.order_id
    }

    fn row_count(&self) -> usize {
        self.events.len()
    }

    fn push_binds<B: Binder>(&self, index: usize, values: &mut B) {
        let Some(e) = self.events.get(index) else { return };
        values
            .cell(self.order_id.to_string())
            .cell(e.event_id.to_string())
            .cell(e.kind.clone())
            .cell(e.occurred_at_us)
            .cell(i64::from(e.partition))
            .cell(e.offset)
            .cell(e.summary.clone())
            .cell(e.published_by.clone())
            .cell(home_region(&self.order_id));
    }

    /// One row: one entry.
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let event_id: String = row.try_get("event_id")?;
        Ok(OrderHistory {
            order_id: uuid_of(Self::TABLE, row)?,
            events: vec![HistoryEntry {
                event_id: Uuid::parse_str(&event_id).map_err(|e| corrupt(Self::TABLE, e))?,
                kind: row.try_get("kind")?,
                occurred_at_us: row.try_get("occurred_at_us")?,
                partition: row.try_get::<i64, _>("partition_id")? as i32,
                offset: row.try_get("record_offset")?,
                summary: row.try_get("summary")?,
                published_by: row.try_get("published_by")?,
            }],
        })
    }
}
