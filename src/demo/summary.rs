//! The demo's closing summary, read from the analyst views.
use std::collections::BTreeMap;

use crate::load::LoadReport;
use projections::store::{ShopSummary, Store, Total};

pub struct Summary(ShopSummary);

fn money(minor: Total) -> String {
    let sign = if minor.0 < 0 { "-" } else { "" };
    let units = minor.0.unsigned_abs();
    format!("{sign}{}.{:02}", units / 100, units % 100)
}

impl Summary {
    pub async fn read(store: &Store) -> anyhow::Result<Self> {
        Ok(Summary(store.reads().shop_summary().await?))
    }

    pub fn print(&self, report: &LoadReport, lags_zero: &BTreeMap<String, bool>) {
        let summary = &self.0;
        let (orders_placed, accepted) = (report.orders_placed, report.accepted);
        println!();
        println!("order process decisions (order_status):");
        for (status, n) in &summary.decided {
            println!("  {status:<18} {n}");
        }
        println!(
            "  the load saw {} confirmed, {} rejected, and left {} unpaid on purpose (they expire)",
            report.confirmed, report.rejected_orders, report.left_unpaid
        );
        match summary.lowest_available {
            Some(lowest) => println!("lowest available stock of any SKU: {lowest} (never below zero)"),
            None => println!("no stock levels yet"),
        }
        println!("orders by fulfilment status:");
        for (status, n) in &summary.orders_by_status {
            println!("  {status:<18} {n}");
        }
        println!("top SKUs by reserved stock:");
        for (sku, reserved, available) in &summary.top_reserved {
            println!("  {sku:<10} reserved {reserved:<6} available {available}");
        }
        println!("captured revenue (net of refunds) per currency:");
        for (currency, minor) in &summary.revenue {
            println!("  {currency} {}", money(*minor));
        }
        let waiting: i64 = summary.backlog.iter().map(|(_, n)| n).sum();
        println!("fulfilment backlog: {waiting} orders paid but not shipped");
        for (warehouse, n) in &summary.backlog {
            println!("  {warehouse:<12} {n}");
        }
        for (kind, zero) in lags_zero {
            println!("group {kind}: {}", if *zero { "lag reached zero" } else { "DID NOT catch up" });
        }
        println!(
            "summary: accepted_requests={accepted} orders_placed={orders_placed} payment_rows={} fulfilment_rows={} dead_letters={}",
            summary.payment_rows, summary.fulfilment_rows, summary.dead_letters
        );
    }
}
