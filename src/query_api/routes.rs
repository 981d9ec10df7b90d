//! The query endpoints. Lists are paginated by an opaque `cursor` (the key of the last
//! item) and `limit`; the answer's `next_cursor` is null on the last page.
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use consumers::ProjectionKind;
use projections::store::{rfc3339, DeadLetterRow};
use schemas::EventKind;
use serde_json::{json, Value};
use uuid::Uuid;

use super::params::Params;
use super::read_your_writes::wait_applied;
use super::{ApiError, ApiState};

type Q = Query<HashMap<String, String>>;

const ORDER_PROJECTIONS: [&str; 3] = ["inventory", "payment", "fulfilment"];

fn order_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_parameter("order_id", format!("{raw:?} is not a UUID")))
}

pub async fn order(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let params = Params::new(q, &[])?;
    let id = order_id(&id)?;
    wait_applied(&state, &ORDER_PROJECTIONS, params.after()?).await?;
    let view =
        state.store.order_view(&id.to_string()).await?.ok_or_else(|| ApiError::not_found(format!("no order {id}")))?;
    Ok(Json(json!(view)))
}

pub async fn timeline(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let params = Params::new(q, &[])?;
    let id = order_id(&id)?.to_string();
    wait_applied(&state, &["history"], params.after()?).await?;
    let history = state.store.order_history(&id).await?;
    let view = state.store.order_view(&id).await?;
    if history.is_none() && view.is_none() {
        return Err(ApiError::not_found(format!("no order {id}")));
    }
    let dead = state.store.list_dead_letters_with(None, Some(&id), false, 1000).await?;
    let mut projections = Vec::new();
    for kind in [ProjectionKind::Inventory, ProjectionKind::Payment, ProjectionKind::Fulfilment] {
        let live = state.store.live_projection(kind.name()).await?;
        let partitions: Vec<i32> = history.iter().flatten().map(|e| e.partition).collect();
        let stored = state.store.stored_offsets(&live.group, &state.topic, &partitions).await?;
        projections.push((kind, live.group, stored));
    }
    let events: Vec<Value> = history
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let event_kind = EventKind::ALL.into_iter().find(|k| k.record_name() == e.kind);
            let applied: serde_json::Map<String, Value> = projections
                .iter()
                .map(|(kind, group, stored)| {
                    let status = applied_status(*kind, event_kind, group, stored, &dead, e.partition, e.offset);
                    (kind.name().to_string(), json!(status))
                })
                .collect();
            json!({
                "event_id": e.event_id, "kind": e.kind, "occurred_at": rfc3339(e.occurred_at_us),
                "position": format!("{}:{}", e.partition, e.offset), "partition": e.partition, "offset": e.offset,
                "summary": e.summary, "applied": applied,
            })
        })
        .collect();
    let dead_letters: Vec<Value> = dead
        .iter()
        .map(|d| {
            json!({"id": d.id, "group": d.group_id, "position": format!("{}:{}", d.partition, d.offset),
                   "reason": d.reason, "status": d.status})
        })
        .collect();
    Ok(Json(json!({"order_id": id, "events": events, "projections": view, "dead_letters": dead_letters})))
}

/// What a projection made of one event: `applied`, `pending` (not reached yet),
/// `parked`/`skipped` (in dead letters), or `not_read` (a kind it ignores).
fn applied_status(
    kind: ProjectionKind,
    event_kind: Option<EventKind>,
    group: &str,
    stored: &[(i32, i64)],
    dead: &[DeadLetterRow],
    partition: i32,
    offset: i64,
) -> &'static str {
    if let Some(d) = dead.iter().find(|d| d.group_id == group && d.partition == partition && d.offset == offset) {
        return match d.status.as_str() {
            "parked" => "parked",
            "skipped" => "skipped",
            _ => "applied",
        };
    }
    if event_kind.is_some_and(|k| !kind.wants(k)) {
        return "not_read";
    }
    match stored.iter().find(|(p, _)| *p == partition) {
        Some((_, next)) if *next > offset => "applied",
        _ => "pending",
    }
}

pub async fn inventory_one(
    State(state): State<ApiState>,
    Path(sku): Path<String>,
    Query(q): Q,
) -> Result<Json<Value>, ApiError> {
    let params = Params::new(q, &[])?;
    wait_applied(&state, &["inventory"], params.after()?).await?;
    let level =
        state.store.inventory_level(&sku).await?.ok_or_else(|| ApiError::not_found(format!("no SKU {sku:?}")))?;
    Ok(Json(json!(level)))
}

pub async fn inventory_list(State(state): State<ApiState>, Query(q): Q) -> Result<Json<Value>, ApiError> {
    let params = Params::new(q, &["below", "limit", "cursor"])?;
    let below = params.integer("below")?;
    let limit = params.limit()?;
    wait_applied(&state, &["inventory"], params.after()?).await?;
    let items = state.store.inventory_page(below, params.text("cursor"), limit).await?;
    let next = (items.len() as i64 == limit).then(|| items.last().map(|l| l.sku.clone())).flatten();
    Ok(Json(json!({"items": items, "next_cursor": next})))
}

pub async fn payments_summary(State(state): State<ApiState>, Query(q): Q) -> Result<Json<Value>, ApiError> {
    let params = Params::new(q, &["currency", "from", "to"])?;
    let currency = params.text("currency");
    if let Some(c) = currency {
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ApiError::bad_parameter("currency", format!("{c:?} is not an ISO 4217 code like EUR")));
        }
    }
    let from = params.time("from")?.unwrap_or(i64::MIN);
    let to = params.time("to")?.unwrap_or(i64::MAX);
    if from >= to {
        return Err(ApiError::bad_parameter("from", "must be before to"));
    }
    wait_applied(&state, &["payment"], params.after()?).await?;
    let currencies = state.store.payments_summary(currency, from, to).await?;
    Ok(Json(json!({"currencies": currencies})))
}

pub async fn fulfilment_backlog(State(state): State<ApiState>, Query(q): Q) -> Result<Json<Value>, ApiError> {
    let params = Params::new(q, &["warehouse", "limit", "cursor"])?;
    let limit = params.limit()?;
    let cursor = params
        .text("cursor")
        .map(|c| {
            c.split_once('_')
                .and_then(|(us, id)| Some((us.parse::<i64>().ok()?, id)))
                .ok_or_else(|| ApiError::bad_parameter("cursor", "not a cursor this API returned"))
        })
        .transpose()?;
    wait_applied(&state, &["fulfilment"], params.after()?).await?;
    let items = state.store.fulfilment_backlog(params.text("warehouse"), cursor, limit).await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|last| format!("{}_{}", last.placed_at.timestamp_micros(), last.order_id)))
        .flatten();
    Ok(Json(json!({"items": items, "next_cursor": next})))
}

pub async fn healthz(State(state): State<ApiState>) -> Response {
    match sqlx::query("SELECT 1").execute(state.store.pool()).await {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "database unreachable"}))).into_response()
        }
    }
}

pub async fn metrics(State(state): State<ApiState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.prometheus.render()).into_response()
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::OPENAPI).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /openapi.json")
}
