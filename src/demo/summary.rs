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

    /// Whether the views agree with each other (see [`disagreements`]).
    pub fn agrees(&self) -> bool {
        disagreements(&self.0).is_empty()
    }

    pub fn print(&self, report: &LoadReport, lags_zero: &BTreeMap<String, bool>, limited_note: Option<&str>) {
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
        let placed: i64 = summary.decided.iter().map(|(_, n)| n).sum();
        let rejected: i64 = summary.rejections.iter().map(|(_, n)| n).sum();
        println!(
            "rejected: {rejected} of {placed} orders ({:.1}%), why:",
            100.0 * rejected as f64 / placed.max(1) as f64
        );
        for (reason, n) in &summary.rejections {
            println!("  {reason:<40} {n}");
        }
        if let Some(note) = limited_note {
            println!("  ({note})");
        }
        println!("decisions on the log (history):");
        for (kind, n) in &summary.logged_decisions {
            println!("  {kind:<18} {n}");
        }
        match disagreements(summary).as_slice() {
            [] => println!("agreement: order_status, fulfilment and the decisions on the log agree on every order"),
            found => println!("agreement: DISAGREE: {}", found.join("; ")),
        }
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

/// Where the order process's statuses, the fulfilment view and the decisions the history
/// recorded from the log tell different stories. Each status of the order process is one
/// or more fulfilment statuses of the same orders; a rejection and an expiry are each one
/// event on the log.
fn disagreements(summary: &ShopSummary) -> Vec<String> {
    let count = |pairs: &[(String, i64)], names: &[&str]| -> i64 {
        pairs.iter().filter(|(name, _)| names.contains(&name.as_str())).map(|(_, n)| n).sum()
    };
    let (process, fulfilment, log) = (&summary.decided, &summary.orders_by_status, &summary.logged_decisions);
    let mut found = Vec::new();
    for (statuses, fulfilled) in [
        (&["pending", "confirmed"][..], &["awaiting_payment"][..]),
        (&["paid"], &["ready_to_ship", "packed"]),
        (&["shipped"], &["shipped"]),
        (&["delivered"], &["delivered"]),
        (&["cancelled"], &["cancelled"]),
        (&["rejected"], &["rejected"]),
        (&["expired"], &["expired"]),
    ] {
        let (a, b) = (count(process, statuses), count(fulfilment, fulfilled));
        if a != b {
            found.push(format!("order_status {} {a} vs fulfilment {} {b}", statuses.join("+"), fulfilled.join("+")));
        }
    }
    for (status, kind) in [("rejected", "OrderRejected"), ("expired", "OrderExpired")] {
        let (a, b) = (count(process, &[status]), count(log, &[kind]));
        if a != b {
            found.push(format!("order_status {status} {a} vs {kind} on the log {b}"));
        }
    }
    found
}
