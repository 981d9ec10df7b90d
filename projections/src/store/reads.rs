//! Reads for the query API, the dashboard, tests and rebuild checks. They go through the
//! views (or the live generation's tables), so a shadow rebuild's switch is atomic for
//! them too.
use std::collections::BTreeMap;

use chrono::DateTime;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use super::connection::Dialect;
use super::error::StoreError;
use super::roles::Reads;
use super::rows::StoredState;
use crate::model::fulfilment::{FulfilmentOrder, FulfilmentStatus};
use crate::model::history::{HistoryEntry, OrderHistory};
use crate::model::inventory::ReservationStatus;
use crate::model::payment::PaymentOrder;
#[cfg(feature = "test-support")]
use crate::{model::inventory::InventoryOrder, registry::ProjectionKind};

/// Microseconds since the epoch as RFC 3339, UTC.
pub fn rfc3339(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ReservationView {
    pub status: ReservationStatus,
    pub lines: serde_json::Value,
}

/// One order across the three projections and the order process; `None` where one has no
/// row (yet).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct OrderView {
    pub order_id: String,
    /// What the order process decided: pending, confirmed, paid, shipped, delivered, or
    /// rejected, expired, cancelled (with the reason).
    pub status: Option<super::OrderStatusRow>,
    pub inventory: Option<ReservationView>,
    pub payment: Option<PaymentOrder>,
    pub fulfilment: Option<FulfilmentOrder>,
}

/// A sum of amounts in minor units, exact however large: every amount is an `i64`, and an
/// `i128` holds the sum of more rows than any table has. A JSON number while every JSON
/// reader holds it exactly (|n| ≤ 2^53 − 1, JavaScript's safe integers), a decimal string
/// beyond, so no client silently rounds a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Total(pub i128);

impl Total {
    /// The largest magnitude sent as a JSON number.
    pub const MAX_SAFE: i128 = (1 << 53) - 1;
}

impl std::fmt::Display for Total {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Total {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(self.0) {
            Ok(n) if self.0.abs() <= Self::MAX_SAFE => serializer.serialize_i64(n),
            _ => serializer.serialize_str(&self.0.to_string()),
        }
    }
}

impl utoipa::PartialSchema for Total {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(-(Self::MAX_SAFE as f64)))
                    .maximum(Some(Self::MAX_SAFE as f64)),
            )
            .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^-?[0-9]+$")))
            .description(Some("Minor units, exact: a JSON number up to 2^53 - 1 in magnitude, a decimal string beyond"))
            .into()
    }
}

impl utoipa::ToSchema for Total {}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CurrencySummary {
    pub currency: String,
    pub orders: i64,
    pub authorized_minor: Total,
    pub captured_minor: Total,
    pub refunded_minor: Total,
    pub net_captured_minor: Total,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct DailyRevenue {
    /// YYYY-MM-DD, UTC.
    pub day: String,
    pub currency: String,
    pub net_captured_minor: Total,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StatusCount {
    pub status: FulfilmentStatus,
    pub orders: i64,
}

pub(super) fn level_of(r: &AnyRow) -> Result<InventoryLevel, sqlx::Error> {
    Ok(InventoryLevel {
        sku: r.try_get("sku")?,
        on_hand: r.try_get("on_hand")?,
        reserved: r.try_get("reserved")?,
        shipped: r.try_get("shipped")?,
        available: r.try_get("available")?,
        region: r.try_get("region")?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct InventoryLevel {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub shipped: i64,
    pub available: i64,
    /// The region whose pool this is, when there are several (each region's stock group
    /// decides its own pool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Every row of every projection table.
#[cfg(feature = "test-support")]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub inventory_levels: Vec<InventoryLevel>,
    pub inventory_orders: Vec<InventoryOrder>,
    pub payments: Vec<PaymentOrder>,
    pub fulfilment: Vec<FulfilmentOrder>,
}

impl Reads {
    pub async fn inventory_levels(&self) -> Result<Vec<InventoryLevel>, StoreError> {
        let rows = sqlx::query(
            "SELECT sku, on_hand, reserved, shipped, available, region FROM inventory_levels ORDER BY sku, region",
        )
        .fetch_all(&self.store.pool)
        .await?;
        Ok(rows.iter().map(level_of).collect::<Result<_, _>>()?)
    }

    /// Every row of the live generation's table of `S`.
    #[cfg(feature = "test-support")]
    async fn all<S: StoredState>(&self, projection: ProjectionKind) -> Result<Vec<S>, StoreError> {
        let table = self.store.live_projection(projection).await?.table(S::TABLE);
        let sql = format!("SELECT {} FROM {table} ORDER BY order_id", S::COLUMNS.join(", "));
        let rows = sqlx::query(&sql).fetch_all(&self.store.pool).await?;
        rows.iter().map(S::from_row).collect()
    }

    #[cfg(feature = "test-support")]
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            inventory_levels: self.inventory_levels().await?,
            inventory_orders: self.all(ProjectionKind::Inventory).await?,
            payments: self.all(ProjectionKind::Payment).await?,
            fulfilment: self.all(ProjectionKind::Fulfilment).await?,
        })
    }

    /// The order as each projection sees it, or `None` if no projection knows it.
    pub async fn order_view(&self, order_id: &str) -> Result<Option<OrderView>, StoreError> {
        let inventory = sqlx::query("SELECT status, lines FROM inventory_reservations WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&self.store.pool)
            .await?
            .map(|r| -> Result<ReservationView, StoreError> {
                let lines: String = r.try_get("lines")?;
                Ok(ReservationView {
                    status: {
                        let raw: String = r.try_get("status")?;
                        ReservationStatus::parse(&raw).ok_or_else(|| StoreError::CorruptRow {
                            table: "inventory_reservations",
                            reason: format!("status {raw:?}"),
                        })?
                    },
                    lines: serde_json::from_str(&lines).unwrap_or(serde_json::Value::Null),
                })
            })
            .transpose()?;
        // The views expose the tables' columns, so the stored-state readers read them too.
        let payment = self.one_from_view::<PaymentOrder>("order_payments", order_id).await?;
        let fulfilment = self.one_from_view::<FulfilmentOrder>("order_fulfilment", order_id).await?;
        let status = match uuid::Uuid::parse_str(order_id) {
            Ok(id) => self.order_status(id).await?,
            Err(_) => None,
        };
        if inventory.is_none() && payment.is_none() && fulfilment.is_none() && status.is_none() {
            return Ok(None);
        }
        Ok(Some(OrderView { order_id: order_id.to_string(), status, inventory, payment, fulfilment }))
    }

    async fn one_from_view<S: StoredState>(&self, view: &str, order_id: &str) -> Result<Option<S>, StoreError> {
        let sql = format!("SELECT {} FROM {view} WHERE order_id = $1", S::COLUMNS.join(", "));
        let row = sqlx::query(&sql).bind(order_id).fetch_optional(&self.store.pool).await?;
        row.map(|r| S::from_row(&r)).transpose()
    }

    /// Every event of the order the history projection has recorded, in log order.
    #[cfg(feature = "test-support")]
    pub async fn order_history(&self, order_id: &str) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        let row = sqlx::query("SELECT events FROM order_history WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&self.store.pool)
            .await?;
        row.map(|r| {
            let events: String = r.try_get("events")?;
            serde_json::from_str(&events)
                .map_err(|e| StoreError::CorruptRow { table: "order_history", reason: e.to_string() })
        })
        .transpose()
    }

    /// Up to `limit` of an order's events in the order they happened (`occurred_at`, then
    /// event id: its facts and its decisions come from two topics, whose offsets do not
    /// compare), after `after` = (occurred_at_us, event id), exclusive: its history a page
    /// at a time.
    pub async fn order_history_page(
        &self,
        order_id: &str,
        after: Option<(i64, Uuid)>,
        limit: i64,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let (at, event) = after.map_or((i64::MIN, String::new()), |(at, id)| (at, id.to_string()));
        let rows = sqlx::query(
            "SELECT order_id, event_id, kind, occurred_at_us, partition_id, record_offset, summary, published_by
             FROM order_history_events
             WHERE order_id = $1 AND (occurred_at_us > $2 OR (occurred_at_us = $2 AND event_id > $3))
             ORDER BY occurred_at_us, event_id LIMIT $4",
        )
        .bind(order_id)
        .bind(at)
        .bind(event)
        .bind(limit)
        .fetch_all(&self.store.pool)
        .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            entries.extend(OrderHistory::from_row(row)?.events);
        }
        Ok(entries)
    }

    /// Which of `order_ids` the payment view shows: how soon an order is visible, measured
    /// from outside (another region's views have no offsets of the log it was appended to).
    pub async fn orders_shown(&self, order_ids: &[String]) -> Result<Vec<String>, StoreError> {
        let mut shown = Vec::new();
        let mut conn = self.store.pool.acquire().await?;
        for chunk in order_ids.chunks(500) {
            let mut q = super::sql::Sql::new("SELECT order_id FROM order_payments WHERE order_id IN ");
            q.list(chunk.iter().cloned());
            for row in q.fetch_all(&mut *conn).await? {
                shown.push(row.try_get("order_id")?);
            }
        }
        Ok(shown)
    }

    /// This region's pool of `sku` (a region serves orders from its own pool).
    pub async fn inventory_level(&self, sku: &str) -> Result<Option<InventoryLevel>, StoreError> {
        let row = sqlx::query(
            "SELECT sku, on_hand, reserved, shipped, available, region FROM inventory_levels
             WHERE sku = $1 AND COALESCE(region, '') = $2",
        )
        .bind(sku)
        .bind(self.store.pool_of(""))
        .fetch_optional(&self.store.pool)
        .await?;
        Ok(row.map(|r| level_of(&r)).transpose()?)
    }

    /// SKUs of this region's pool in SKU order after `after_sku`, only those with
    /// `available < below` if given.
    pub async fn inventory_page(
        &self,
        below: Option<i64>,
        after_sku: Option<&str>,
        limit: i64,
    ) -> Result<Vec<InventoryLevel>, StoreError> {
        let rows = sqlx::query(
            "SELECT sku, on_hand, reserved, shipped, available, region FROM inventory_levels
             WHERE ($1 = 0 OR available < $2) AND sku > $3 AND COALESCE(region, '') = $4 ORDER BY sku LIMIT $5",
        )
        .bind(i64::from(below.is_some()))
        .bind(below.unwrap_or(0))
        .bind(after_sku.unwrap_or(""))
        .bind(self.store.pool_of(""))
        .bind(limit)
        .fetch_all(&self.store.pool)
        .await?;
        Ok(rows.iter().map(level_of).collect::<Result<_, _>>()?)
    }

    /// Payment totals per currency of the orders placed in `[from_us, to_us)`.
    pub async fn payments_summary(
        &self,
        currency: Option<&str>,
        from_us: i64,
        to_us: i64,
    ) -> Result<Vec<CurrencySummary>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT currency, COUNT(*) AS orders, {}, {}, {}
             FROM order_payments WHERE ($1 = '' OR currency = $1) AND placed_at_us >= $2 AND placed_at_us < $3
             GROUP BY currency ORDER BY currency",
            exact_sum("authorized_minor", "authorized"),
            exact_sum("captured_minor", "captured"),
            exact_sum("refunded_minor", "refunded"),
        ))
        .bind(currency.unwrap_or(""))
        .bind(from_us)
        .bind(to_us)
        .fetch_all(&self.store.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let captured = total(r, "captured")?;
                let refunded = total(r, "refunded")?;
                Ok(CurrencySummary {
                    currency: r.try_get("currency")?,
                    orders: r.try_get("orders")?,
                    authorized_minor: total(r, "authorized")?,
                    captured_minor: captured,
                    refunded_minor: refunded,
                    net_captured_minor: Total(captured.0 - refunded.0),
                })
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    /// Captured minus refunded per UTC day of capture and currency, the last `days` days.
    pub async fn revenue_per_day(&self, now_us: i64, days: i64) -> Result<Vec<DailyRevenue>, StoreError> {
        const DAY_US: i64 = 86_400_000_000;
        let first_day = now_us / DAY_US - days + 1;
        let rows = sqlx::query(&format!(
            "SELECT captured_at_us / 86400000000 AS day, currency, {}
             FROM order_payments WHERE captured_at_us >= $1 GROUP BY captured_at_us / 86400000000, currency
             ORDER BY day, currency",
            exact_sum("captured_minor - refunded_minor", "net"),
        ))
        .bind(first_day * DAY_US)
        .fetch_all(&self.store.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let day: i64 = r.try_get("day")?;
                Ok(DailyRevenue {
                    // An out-of-range stored time (hand-edited data) shows as an empty day, never a panic.
                    day: day
                        .checked_mul(DAY_US)
                        .map(rfc3339)
                        .and_then(|t| t.get(..10).map(str::to_string))
                        .unwrap_or_default(),
                    currency: r.try_get("currency")?,
                    net_captured_minor: total(r, "net")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    /// Orders not shipped yet, oldest first, after the cursor `(placed_at_us, order_id)`.
    pub async fn fulfilment_backlog(
        &self,
        warehouse: Option<&str>,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<FulfilmentOrder>, StoreError> {
        let (after_us, after_id) = after.unwrap_or((i64::MIN, ""));
        let open: Vec<String> = FulfilmentStatus::OPEN.iter().map(|s| format!("'{s}'")).collect();
        let rows = sqlx::query(&format!(
            "SELECT {} FROM order_fulfilment
             WHERE status IN ({}) AND ($1 = '' OR warehouse = $1)
             AND (placed_at_us > $2 OR (placed_at_us = $2 AND order_id > $3))
             ORDER BY placed_at_us, order_id LIMIT $4",
            FulfilmentOrder::COLUMNS.join(", "),
            open.join(", ")
        ))
        .bind(warehouse.unwrap_or(""))
        .bind(after_us)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter().map(FulfilmentOrder::from_row).collect()
    }

    pub async fn orders_by_status(&self) -> Result<Vec<StatusCount>, StoreError> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) AS orders FROM order_fulfilment GROUP BY status ORDER BY status")
                .fetch_all(&self.store.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let raw: String = r.try_get("status")?;
                let status = FulfilmentStatus::parse(&raw).ok_or_else(|| StoreError::CorruptRow {
                    table: "order_fulfilment",
                    reason: format!("status {raw:?}"),
                })?;
                Ok(StatusCount { status, orders: r.try_get("orders")? })
            })
            .collect()
    }
}

/// Splits each value at 10^9 into a high and a low part.
const SPLIT: i128 = 1_000_000_000;

/// The select items of an exact sum of `expr` (a BIGINT expression) as `<alias>_hi` and
/// `<alias>_lo`: the sums of the value's high and low parts at 10^9, each of which fits a
/// BIGINT for any number of rows a table holds. A plain `SUM` overflows: SQLite raises
/// "integer overflow", and PostgreSQL's NUMERIC result can neither be read through `Any`
/// nor cast back to BIGINT. Both databases divide and take remainders truncating towards
/// zero, as Rust does, so `hi * 10^9 + lo` is the sum exactly, negative values included.
fn exact_sum(expr: &str, alias: &str) -> String {
    format!(
        "CAST(COALESCE(SUM(({expr}) / {SPLIT}), 0) AS BIGINT) AS {alias}_hi, \
         CAST(COALESCE(SUM(({expr}) % {SPLIT}), 0) AS BIGINT) AS {alias}_lo"
    )
}

/// The exact sum [`exact_sum`] selected as `alias`.
fn total(row: &AnyRow, alias: &str) -> Result<Total, sqlx::Error> {
    let hi = row.try_get::<i64, _>(format!("{alias}_hi").as_str())?;
    let lo = row.try_get::<i64, _>(format!("{alias}_lo").as_str())?;
    Ok(Total(i128::from(hi) * SPLIT + i128::from(lo)))
}

/// What the demo prints at the end, read from the analyst views: the order process's
/// decisions, stock, fulfilment, revenue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShopSummary {
    /// Orders per status of the order process (`order_status`), most first.
    pub decided: Vec<(String, i64)>,
    /// The lowest available units of any SKU: the process never lets it go below zero.
    pub lowest_available: Option<i64>,
    /// Orders per fulfilment status, most first.
    pub orders_by_status: Vec<(String, i64)>,
    /// The five SKUs with the most reserved units: (sku, reserved, available).
    pub top_reserved: Vec<(String, i64, i64)>,
    /// Captured minus refunded, per currency.
    pub revenue: Vec<(String, Total)>,
    /// Orders paid but not shipped, per warehouse.
    pub backlog: Vec<(String, i64)>,
    /// Rejected orders per reason, the reason's detail in brackets left out (e.g.
    /// `out of stock: SKU-0`), most first.
    pub rejections: Vec<(String, i64)>,
    /// The order process's decisions as the history recorded them from the log, per
    /// event kind (`OrderConfirmed`, `OrderRejected`, `OrderExpired`).
    pub logged_decisions: Vec<(String, i64)>,
    pub payment_rows: i64,
    pub fulfilment_rows: i64,
    pub dead_letters: i64,
}

/// `out of stock: SKU-0 (2 requested, 0 available)` → `out of stock: SKU-0`: the same
/// reason for every order it refused, whatever the quantities.
fn reason_kind(reason: &str) -> &str {
    reason.split_once(" (").map_or(reason, |(kind, _)| kind).trim()
}

fn pairs(rows: &[AnyRow]) -> Result<Vec<(String, i64)>, sqlx::Error> {
    rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?))).collect()
}

impl Reads {
    /// The stock group's holds of transfers in this region's pool: those it dispatched and
    /// those it received.
    pub async fn transfer_holds(&self) -> Result<Vec<crate::process::stock::Hold>, StoreError> {
        use crate::process::stock::{Hold, HoldStatus};
        let rows = sqlx::query(
            "SELECT sku, order_id, quantity, status FROM stock_holds WHERE status IN ('dispatched', 'received')
             ORDER BY sku, order_id",
        )
        .fetch_all(&self.store.pool)
        .await?;
        let corrupt = |what: String| StoreError::Invalid(format!("a row of stock_holds: {what}"));
        rows.iter()
            .map(|row| {
                let (order_id, status): (String, String) = (row.try_get("order_id")?, row.try_get("status")?);
                Ok(Hold {
                    sku: row.try_get("sku")?,
                    order_id: Uuid::parse_str(&order_id).map_err(|e| corrupt(e.to_string()))?,
                    quantity: i32::try_from(row.try_get::<i64, _>("quantity")?).map_err(|e| corrupt(e.to_string()))?,
                    status: HoldStatus::parse(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?,
                })
            })
            .collect()
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.store.pool).await?;
        Ok(())
    }

    /// The demo's closing summary.
    pub async fn shop_summary(&self) -> Result<ShopSummary, StoreError> {
        let pool = &self.store.pool;
        let all = |sql: &'static str| sqlx::query(sql).fetch_all(pool);
        let count = |sql: &'static str| async move { sqlx::query(sql).fetch_one(pool).await?.try_get::<i64, _>(0) };
        Ok(ShopSummary {
            decided: pairs(&all("SELECT status, COUNT(*) FROM order_status GROUP BY status ORDER BY COUNT(*) DESC, status").await?)?,
            lowest_available: sqlx::query("SELECT MIN(available) FROM inventory_levels").fetch_one(pool).await?.try_get(0)?,
            orders_by_status: pairs(
                &all("SELECT status, COUNT(*) FROM order_fulfilment GROUP BY status ORDER BY COUNT(*) DESC, status").await?,
            )?,
            top_reserved: all("SELECT sku, reserved, available FROM inventory_levels ORDER BY reserved DESC, sku LIMIT 5")
                .await?
                .iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?, r.try_get::<i64, _>(2)?)))
                .collect::<Result<_, sqlx::Error>>()?,
            revenue: sqlx::query(&format!(
                "SELECT currency, {} FROM order_payments GROUP BY currency ORDER BY currency",
                exact_sum("captured_minor - refunded_minor", "net")
            ))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<String, _>("currency")?, total(r, "net")?)))
            .collect::<Result<_, sqlx::Error>>()?,
            backlog: pairs(
                &all("SELECT COALESCE(warehouse, 'unassigned'), COUNT(*) FROM order_fulfilment
                      WHERE status IN ('ready_to_ship', 'packed') GROUP BY COALESCE(warehouse, 'unassigned') ORDER BY 1")
                .await?,
            )?,
            rejections: {
                let mut per_reason: BTreeMap<String, i64> = BTreeMap::new();
                for row in all("SELECT COALESCE(reason, '') FROM order_status WHERE status = 'rejected'").await? {
                    *per_reason.entry(reason_kind(&row.try_get::<String, _>(0)?).to_string()).or_default() += 1;
                }
                let mut most_first: Vec<(String, i64)> = per_reason.into_iter().collect();
                most_first.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                most_first
            },
            logged_decisions: pairs(
                &all("SELECT kind, COUNT(*) FROM order_history_events
                      WHERE kind IN ('OrderConfirmed', 'OrderRejected', 'OrderExpired') GROUP BY kind ORDER BY kind")
                .await?,
            )?,
            payment_rows: count("SELECT COUNT(*) FROM order_payments").await?,
            fulfilment_rows: count("SELECT COUNT(*) FROM order_fulfilment").await?,
            dead_letters: count("SELECT COUNT(*) FROM dead_letters").await?,
        })
    }
}

/// How far a streaming replica is behind its primary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaLag {
    /// WAL received from the primary and not yet applied, in bytes.
    pub unapplied_bytes: i64,
    /// Since the newest transaction it applied committed on the primary (grows while the
    /// primary is idle, so read it with `unapplied_bytes`).
    pub seconds_since_replayed: f64,
}

impl Reads {
    /// How far behind its primary this database is, when it is a replica (`None`: the
    /// primary itself, or SQLite).
    pub async fn replica_lag(&self) -> Result<Option<ReplicaLag>, StoreError> {
        if self.store.dialect != Dialect::Postgres || !self.store.is_standby().await? {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT CAST(COALESCE(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0) AS BIGINT)
                    AS unapplied,
                    CAST(COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) AS DOUBLE PRECISION)
                    AS seconds",
        )
        .fetch_one(&self.store.pool)
        .await?;
        Ok(Some(ReplicaLag {
            unapplied_bytes: row.try_get("unapplied")?,
            seconds_since_replayed: row.try_get("seconds")?,
        }))
    }
}
