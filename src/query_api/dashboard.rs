//! The dashboard: one self-contained page (no external assets, so it works offline and
//! behind strict proxies) that polls `/dashboard.json` and draws it.
use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::params::Params;
use super::{ApiError, ApiState};

pub async fn page() -> Response {
    Html(super::DASHBOARD_HTML).into_response()
}

/// Everything the page shows, in one answer, so the numbers on screen are consistent.
pub async fn data(
    State(state): State<ApiState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let params = Params::new(q, &["days"])?;
    let days = match params.integer("days")? {
        None => 14,
        Some(d) if (1..=366).contains(&d) => d,
        Some(_) => return Err(ApiError::bad_parameter("days", "must be from 1 to 366")),
    };
    let store = &state.store;
    let by_status = store.orders_by_status().await?;
    let orders_total: i64 = by_status.iter().map(|s| s.orders).sum();
    let low = store.inventory_page(Some(state.low_stock), None, 1000).await?;
    let oversold = low.iter().filter(|l| l.available < 0).count();
    let now_us = chrono::Utc::now().timestamp_micros();
    let revenue = store.revenue_per_day(now_us, days).await?;
    let dead: Vec<Value> =
        store.dead_letter_counts().await?.into_iter().map(|(g, n)| json!({"group": g, "parked": n})).collect();
    let dead_total: i64 = dead.iter().filter_map(|d| d["parked"].as_i64()).sum();
    let lag = lag_rows(&state).await?;
    let lag_total: i64 = lag.iter().filter_map(|l| l["lag"].as_i64()).sum();
    Ok(Json(json!({
        "generated_at": projections::store::rfc3339(now_us),
        "orders_total": orders_total,
        "orders_by_status": by_status,
        "inventory": {"low_stock_below": state.low_stock, "low": low.len(), "oversold": oversold, "items": low},
        "revenue_per_day": revenue,
        "lag": lag,
        "lag_total": lag_total,
        "dead_letters": dead,
        "dead_letters_total": dead_total,
    })))
}

async fn lag_rows(state: &ApiState) -> Result<Vec<Value>, ApiError> {
    let ends: BTreeMap<i32, i64> = match state.inspector.clone() {
        Some(inspector) => {
            let topic = state.topic.clone();
            match tokio::task::spawn_blocking(move || inspector.log_ends(&topic)).await {
                Ok(Ok(ends)) => ends,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read log end offsets");
                    BTreeMap::new()
                }
                Err(_) => BTreeMap::new(),
            }
        }
        None => BTreeMap::new(),
    };
    let offsets = state.store.all_group_offsets(&state.topic).await?;
    let mut rows = Vec::new();
    for live in state.store.live_projections().await? {
        let stored: BTreeMap<i32, i64> =
            offsets.iter().filter(|o| o.group == live.group).map(|o| (o.partition, o.next_offset)).collect();
        let partitions: std::collections::BTreeSet<i32> = ends.keys().chain(stored.keys()).copied().collect();
        for p in partitions {
            let next = stored.get(&p).copied().unwrap_or(0);
            let end = ends.get(&p).copied();
            rows.push(json!({
                "projection": live.projection, "group": live.group, "partition": p, "next_offset": next,
                "log_end": end, "lag": end.map(|e| (e - next).max(0)),
            }));
        }
    }
    Ok(rows)
}
