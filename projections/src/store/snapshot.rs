//! Whole-projection reads in a canonical order: for tests, rebuild checks and comparing
//! PostgreSQL with SQLite.
use sqlx::Row;

use super::rows::StoredState;
use super::{Store, StoreError};
use crate::model::fulfilment::FulfilmentOrder;
use crate::model::inventory::InventoryOrder;
use crate::model::payment::PaymentOrder;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InventoryLevel {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub shipped: i64,
    pub available: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetterRow {
    pub id: i64,
    pub group_id: String,
    pub partition: i32,
    pub offset: i64,
    pub order_id: Option<String>,
    pub reason: String,
    pub created_at_ms: i64,
    /// parked, retried or skipped.
    pub status: String,
}

/// Every row of every projection table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub inventory_levels: Vec<InventoryLevel>,
    pub inventory_orders: Vec<InventoryOrder>,
    pub payments: Vec<PaymentOrder>,
    pub fulfilment: Vec<FulfilmentOrder>,
}

impl Store {
    pub async fn inventory_levels(&self) -> Result<Vec<InventoryLevel>, StoreError> {
        let rows = sqlx::query("SELECT sku, on_hand, reserved, shipped, available FROM inventory_levels ORDER BY sku")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(super::queries::level_of).collect::<Result<_, _>>()?)
    }

    /// Every row of the live generation's table of `S`.
    async fn all<S: StoredState>(&self, projection: &str) -> Result<Vec<S>, StoreError> {
        let table = self.live_projection(projection).await?.table(S::TABLE);
        let sql = format!("SELECT {} FROM {table} ORDER BY order_id", S::COLUMNS.join(", "));
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(S::from_row).collect()
    }

    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            inventory_levels: self.inventory_levels().await?,
            inventory_orders: self.all("inventory").await?,
            payments: self.all("payment").await?,
            fulfilment: self.all("fulfilment").await?,
        })
    }

    pub async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetterRow>, StoreError> {
        self.list_dead_letters(Some(group), i64::MAX).await
    }

    /// Parked records (not yet retried or skipped), oldest first, of one group or of all groups.
    pub async fn list_dead_letters(&self, group: Option<&str>, limit: i64) -> Result<Vec<DeadLetterRow>, StoreError> {
        self.list_dead_letters_with(group, None, true, limit).await
    }

    /// Dead letters of a group (or all), of one order (or all), parked only or also resolved.
    pub async fn list_dead_letters_with(
        &self,
        group: Option<&str>,
        order_id: Option<&str>,
        parked_only: bool,
        limit: i64,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, group_id, partition_id, record_offset, order_id, reason, created_at_ms, status FROM dead_letters
             WHERE ($1 = '' OR group_id = $1) AND ($2 = '' OR order_id = $2) AND ($3 = 0 OR status = 'parked')
             ORDER BY group_id, partition_id, record_offset LIMIT $4",
        )
        .bind(group.unwrap_or(""))
        .bind(order_id.unwrap_or(""))
        .bind(i64::from(parked_only))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetterRow {
                    id: r.try_get("id")?,
                    group_id: r.try_get("group_id")?,
                    partition: r.try_get::<i64, _>("partition_id")? as i32,
                    offset: r.try_get("record_offset")?,
                    order_id: r.try_get("order_id")?,
                    reason: r.try_get("reason")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                    status: r.try_get("status")?,
                })
            })
            .collect()
    }
}
