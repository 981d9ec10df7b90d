//! The demo's closing summary, read from the analyst views.
use std::collections::BTreeMap;

use producers::load::LoadReport;
use projections::store::Store;
use sqlx::Row;

pub struct Summary {
    /// The order process's decisions (`order_status`).
    decided: Vec<(String, i64)>,
    /// The lowest available units of any SKU: the process never lets it go below zero.
    lowest_available: Option<i64>,
    orders_by_status: Vec<(String, i64)>,
    top_reserved: Vec<(String, i64, i64)>,
    revenue: Vec<(String, i64)>,
    backlog: Vec<(String, i64)>,
    payment_rows: i64,
    fulfilment_rows: i64,
    dead_letters: i64,
}

fn money(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, (minor % 100).abs())
}

impl Summary {
    pub async fn read(store: &Store) -> anyhow::Result<Self> {
        let pool = store.pool();
        let pairs = |rows: Vec<sqlx::any::AnyRow>| -> anyhow::Result<Vec<(String, i64)>> {
            rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?))).collect()
        };
        let decided = pairs(
            sqlx::query("SELECT status, COUNT(*) FROM order_status GROUP BY status ORDER BY COUNT(*) DESC, status")
                .fetch_all(pool)
                .await?,
        )?;
        let lowest_available: Option<i64> =
            sqlx::query("SELECT MIN(available) FROM inventory_levels").fetch_one(pool).await?.try_get(0)?;
        let orders_by_status = pairs(
            sqlx::query("SELECT status, COUNT(*) FROM order_fulfilment GROUP BY status ORDER BY COUNT(*) DESC, status")
                .fetch_all(pool)
                .await?,
        )?;
        let top_reserved =
            sqlx::query("SELECT sku, reserved, available FROM inventory_levels ORDER BY reserved DESC, sku LIMIT 5")
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?, r.try_get::<i64, _>(2)?)))
                .collect::<anyhow::Result<_>>()?;
        let revenue = pairs(
            sqlx::query(
                "SELECT currency, CAST(SUM(captured_minor - refunded_minor) AS BIGINT) FROM order_payments GROUP BY currency ORDER BY currency",
            )
            .fetch_all(pool)
            .await?,
        )?;
        let backlog = pairs(
            sqlx::query(
                "SELECT COALESCE(warehouse, 'unassigned'), COUNT(*) FROM order_fulfilment
                 WHERE status IN ('ready_to_ship', 'packed') GROUP BY COALESCE(warehouse, 'unassigned') ORDER BY 1",
            )
            .fetch_all(pool)
            .await?,
        )?;
        let count = |sql: &'static str| async move { sqlx::query(sql).fetch_one(pool).await?.try_get::<i64, _>(0) };
        Ok(Summary {
            decided,
            lowest_available,
            orders_by_status,
            top_reserved,
            revenue,
            backlog,
            payment_rows: count("SELECT COUNT(*) FROM order_payments").await?,
            fulfilment_rows: count("SELECT COUNT(*) FROM order_fulfilment").await?,
            dead_letters: count("SELECT COUNT(*) FROM dead_letters").await?,
        })
    }

    pub fn print(&self, report: &LoadReport, lags_zero: &BTreeMap<String, bool>) {
        let (orders_placed, accepted) = (report.orders_placed, report.accepted);
        println!();
        println!("order process decisions (order_status):");
        for (status, n) in &self.decided {
            println!("  {status:<18} {n}");
        }
        println!(
            "  the load saw {} confirmed, {} rejected, and left {} unpaid on purpose (they expire)",
            report.confirmed, report.rejected_orders, report.left_unpaid
        );
        match self.lowest_available {
            Some(lowest) => println!("lowest available stock of any SKU: {lowest} (never below zero)"),
            None => println!("no stock levels yet"),
        }
        println!("orders by fulfilment status:");
        for (status, n) in &self.orders_by_status {
            println!("  {status:<18} {n}");
        }
        println!("top SKUs by reserved stock:");
        for (sku, reserved, available) in &self.top_reserved {
            println!("  {sku:<10} reserved {reserved:<6} available {available}");
        }
        println!("captured revenue (net of refunds) per currency:");
        for (currency, minor) in &self.revenue {
            println!("  {currency} {}", money(*minor));
        }
        let waiting: i64 = self.backlog.iter().map(|(_, n)| n).sum();
        println!("fulfilment backlog: {waiting} orders paid but not shipped");
        for (warehouse, n) in &self.backlog {
            println!("  {warehouse:<12} {n}");
        }
        for (kind, zero) in lags_zero {
            println!("group {kind}: {}", if *zero { "lag reached zero" } else { "DID NOT catch up" });
        }
        println!(
            "summary: accepted_requests={accepted} orders_placed={orders_placed} payment_rows={} fulfilment_rows={} dead_letters={}",
            self.payment_rows, self.fulfilment_rows, self.dead_letters
        );
    }
}
