//! The query endpoints. Lists are paginated by an opaque `cursor` (the key of the last
//! item) and `limit`; the answer's `next_cursor` is null on the last page. Each handler's
//! `#[utoipa::path]` is its entry in the OpenAPI document; the `*Query` types there only
//! document the parameters, which [`Params`] parses (refusing unknown ones).
use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use infra::http::{ErrorBody, Health};
use projections::model::fulfilment::FulfilmentOrder;
use projections::store::{rfc3339, CurrencySummary, DeadLetterRow, DeadLetterStatus, InventoryLevel, OrderView};
use projections::ProjectionKind;
use schemas::{EventKind, TopicRole};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, IntoResponses, ToSchema};
use uuid::Uuid;

use super::params::{bad_parameter, plain_text, Params, AFTER_PATTERN, MAX_FILTER, MAX_LIMIT, TEXT_PATTERN};
use super::read_your_writes::wait_applied;
use super::{read_failed, ApiError, ApiState};

type Q = Query<HashMap<String, String>>;

fn order_id(raw: &str) -> Result<Uuid, ApiError> {
    infra::http::hyphenated_uuid(raw).ok_or_else(|| bad_parameter("order_id", format!("{raw:?} is not a UUID")))
}

fn after_schema() -> Schema {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(AFTER_PATTERN)).into()
}

/// A timeline cursor: the `occurred_at` (microseconds) and event id of the last event of
/// the page before.
const TIMELINE_CURSOR_PATTERN: &str = "^[0-9]{1,18}:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

fn timeline_cursor_schema() -> Schema {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(TIMELINE_CURSOR_PATTERN)).into()
}

/// The timeline's `cursor`, as [`TIMELINE_CURSOR_PATTERN`] writes it.
fn timeline_cursor(params: &Params) -> Result<Option<(i64, Uuid)>, ApiError> {
    let Some(raw) = params.text("cursor") else { return Ok(None) };
    let bad = || bad_parameter("cursor", format!("{raw:?} is not a cursor this endpoint gave"));
    let (at, id) = raw.split_once(':').ok_or_else(bad)?;
    if at.is_empty() || at.len() > 18 || !at.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let id = Uuid::try_parse(id).ok().filter(|u| u.hyphenated().to_string() == id).ok_or_else(bad)?;
    Ok(Some((at.parse().map_err(|_| bad())?, id)))
}

fn text_schema() -> Schema {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(TEXT_PATTERN)).into()
}

fn limit_schema() -> Schema {
    ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).maximum(Some(MAX_LIMIT)).into()
}

fn filter_schema() -> Schema {
    ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(-MAX_FILTER)).maximum(Some(MAX_FILTER)).into()
}

/// `after=` alone.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents what `Params` parses
pub struct AfterQuery {
    /// A position the checkout returned (`<partition>:<offset>`, or a regional checkout's
    /// `<region>:<partition>:<offset>:<timestamp ms>:<event id>`, readable in every
    /// region): answer only once the projections read here have applied it, or 503 after
    /// the server's read wait.
    #[param(schema_with = after_schema)]
    after: Option<String>,
}

/// Everything a read can answer besides its 200.
#[derive(IntoResponses)]
#[allow(dead_code)] // the variants document statuses; handlers build the bodies
pub enum ReadErrors {
    /// A parameter is invalid or unknown (`parameter` names it).
    #[response(status = 400)]
    BadParameter(ErrorBody),
    /// Nothing with this key (the routes that look one thing up), or `after=` names a
    /// partition the topic does not have (`unknown_partition`: no such log position) or a
    /// region whose log this region does not copy (`unknown_region`).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `after=` was not applied within the read wait (`not_caught_up`, with where the
    /// projection is), its partition's stored offset lies outside the log
    /// (`offsets_refused`, until an operator resets it), the order process has not decided
    /// the order within it (`not_decided`, with `decided=true`), another region's record is
    /// not in this region's copy yet (`not_replicated`), or the database did not answer
    /// (`unavailable`): retry.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// The database answered with an error about the data it holds (`internal`); asking
    /// again fails the same way, and the error is logged for an operator.
    #[response(status = 500)]
    Internal(ErrorBody),
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct OrderPath {
    order_id: Uuid,
}

/// `after=` and `decided=`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents what `Params` parses
pub struct OrderQuery {
    /// A position the checkout returned (`<partition>:<offset>`): answer only once the
    /// projections read here have applied it, or 503 after the server's read wait.
    #[param(schema_with = after_schema)]
    after: Option<String>,
    /// `true`: answer once the order process has decided the order (status no longer
    /// `pending`), or 503 `not_decided` after the server's read wait.
    decided: Option<bool>,
}

/// One order as each projection sees it, with the order process's status.
#[utoipa::path(get, path = "/orders/{order_id}", tag = "orders", params(OrderPath, OrderQuery),
    responses((status = 200, body = OrderView), ReadErrors))]
pub async fn order(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Json<OrderView>, ApiError> {
    let params = Params::new(q, &["decided"])?;
    let id = order_id(&id)?;
    let decided = match params.text("decided") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(bad_parameter("decided", format!("{other:?} is not true or false"))),
    };
    wait_applied(&state, &ProjectionKind::ORDER_STATE, params.after()?).await?;
    if decided {
        wait_decided(&state, id).await?;
    }
    let view = state.reads.order_view(&id.to_string()).await.map_err(read_failed)?;
    Ok(Json(view.ok_or_else(|| ApiError::not_found(format!("no order {id}")))?))
}

/// Waits, at most the read wait, until the order process has decided `id`.
async fn wait_decided(state: &ApiState, id: Uuid) -> Result<(), ApiError> {
    let deadline = std::time::Instant::now() + state.read_wait;
    loop {
        let status = state.reads.order_status(id).await.map_err(read_failed)?;
        if status.as_ref().is_some_and(|s| s.status.is_decided()) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            let seen = status.map_or("unknown to the order process", |s| s.status.as_str());
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "not_decided",
                format!("order {id} was not decided within {:?} (it is {seen}); retry later", state.read_wait),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// What a projection made of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// Its effect is in the projection.
    Applied,
    /// The projection has not reached it yet.
    Pending,
    /// In dead letters, holding back the order's later events.
    Parked,
    /// In dead letters, given up by an operator.
    Skipped,
    /// A kind of event this projection does not read.
    NotRead,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEvent {
    pub event_id: Uuid,
    /// The Avro record name, e.g. `PaymentCaptured`.
    pub kind: String,
    pub occurred_at: String,
    /// `<partition>:<offset>`.
    pub position: String,
    pub partition: i32,
    pub offset: i64,
    pub summary: String,
    /// The principal that published it; null when the record did not say (a producer
    /// writing straight to the topic, or an event from before principals were recorded).
    pub published_by: Option<String>,
    /// Per projection that describes the order (inventory, payment, fulfilment).
    pub applied: BTreeMap<String, EventOutcome>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineDeadLetter {
    pub id: i64,
    pub group: String,
    pub position: String,
    pub reason: String,
    pub status: DeadLetterStatus,
}

/// Every event of an order in log order, what each projection made of it, the order as
/// the projections see it now, and its dead letters.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    pub order_id: Uuid,
    /// One page of the order's events in log order (`limit`, default 100).
    pub events: Vec<TimelineEvent>,
    /// Pass as `cursor` for the next page of events; null on the last one.
    pub next_cursor: Option<String>,
    pub projections: Option<OrderView>,
    pub dead_letters: Vec<TimelineDeadLetter>,
}

/// `after=`, and the page of events.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents what `Params` parses
pub struct TimelineQuery {
    /// Events per page (default 100).
    #[param(schema_with = limit_schema)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page: when its last event happened, and its id.
    #[param(schema_with = timeline_cursor_schema)]
    cursor: Option<String>,
    #[param(schema_with = after_schema)]
    after: Option<String>,
}

/// An order's history: every event with its position and how each projection took it,
/// a page at a time.
#[utoipa::path(get, path = "/orders/{order_id}/timeline", tag = "orders", params(OrderPath, TimelineQuery),
    responses((status = 200, body = Timeline), ReadErrors))]
pub async fn timeline(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Json<Timeline>, ApiError> {
    let params = Params::new(q, &["limit", "cursor"])?;
    let order_id = order_id(&id)?;
    let id = order_id.to_string();
    let limit = params.limit()?;
    let cursor = timeline_cursor(&params)?;
    wait_applied(&state, &[ProjectionKind::History], params.after()?).await?;
    let reads = &state.reads;
    let history = reads.order_history_page(&id, cursor, limit).await.map_err(read_failed)?;
    let view = reads.order_view(&id).await.map_err(read_failed)?;
    if history.is_empty() && cursor.is_none() && view.is_none() {
        return Err(ApiError::not_found(format!("no order {id}")));
    }
    let next_cursor = (history.len() as i64 == limit)
        .then(|| history.last().map(|e| format!("{}:{}", e.occurred_at_us, e.event_id.hyphenated())))
        .flatten();
    let dead = reads.list_dead_letters_with(None, Some(&id), false, 1000).await.map_err(read_failed)?;
    let partitions: Vec<i32> = history.iter().map(|e| e.partition).collect();
    // An entry's topic follows from its kind: a reader applies each kind only from its own.
    let topics = [TopicRole::Orders, TopicRole::Decisions];
    let mut projections = Vec::new();
    for kind in ProjectionKind::ORDER_STATE {
        let live = reads.live_projection(kind).await.map_err(read_failed)?;
        let mut stored = Vec::new();
        for role in topics {
            let topic = role.name(&state.topic);
            stored.push(reads.stored_offsets(&live.group, &topic, &partitions).await.map_err(read_failed)?);
        }
        projections.push((kind, live.group, stored));
    }
    let events = history
        .into_iter()
        .map(|e| {
            let event_kind = EventKind::ALL.into_iter().find(|k| k.record_name() == e.kind);
            let topic = usize::from(event_kind.is_some_and(|k| TopicRole::of(k) == TopicRole::Decisions));
            let applied = projections
                .iter()
                .map(|(kind, group, stored)| {
                    let at = (e.partition, e.offset);
                    (kind.name().to_string(), applied_status(*kind, event_kind, group, &stored[topic], &dead, at))
                })
                .collect();
            TimelineEvent {
                event_id: e.event_id,
                kind: e.kind,
                occurred_at: rfc3339(e.occurred_at_us),
                position: format!("{}:{}", e.partition, e.offset),
                partition: e.partition,
                offset: e.offset,
                summary: e.summary,
                published_by: e.published_by,
                applied,
            }
        })
        .collect();
    let dead_letters = dead
        .into_iter()
        .map(|d| TimelineDeadLetter {
            id: d.id,
            group: d.group_id,
            position: format!("{}:{}", d.partition, d.offset),
            reason: d.reason,
            status: d.status,
        })
        .collect();
    Ok(Json(Timeline { order_id, events, next_cursor, projections: view, dead_letters }))
}

fn applied_status(
    kind: ProjectionKind,
    event_kind: Option<EventKind>,
    group: &str,
    stored: &[(i32, i64)],
    dead: &[DeadLetterRow],
    (partition, offset): (i32, i64),
) -> EventOutcome {
    if let Some(d) = dead.iter().find(|d| d.group_id == group && d.partition == partition && d.offset == offset) {
        return match d.status {
            DeadLetterStatus::Parked => EventOutcome::Parked,
            DeadLetterStatus::Skipped => EventOutcome::Skipped,
            DeadLetterStatus::Retried => EventOutcome::Applied,
        };
    }
    if event_kind.is_some_and(|k| !kind.wants(k)) {
        return EventOutcome::NotRead;
    }
    match stored.iter().find(|(p, _)| *p == partition) {
        Some((_, next)) if *next > offset => EventOutcome::Applied,
        _ => EventOutcome::Pending,
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct SkuPath {
    #[param(schema_with = text_schema)]
    sku: String,
}

/// One SKU's stock.
#[utoipa::path(get, path = "/inventory/{sku}", tag = "inventory", params(SkuPath, AfterQuery),
    responses((status = 200, body = InventoryLevel), ReadErrors))]
pub async fn inventory_one(
    State(state): State<ApiState>,
    Path(sku): Path<String>,
    Query(q): Q,
) -> Result<Json<InventoryLevel>, ApiError> {
    let params = Params::new(q, &[])?;
    if !plain_text(&sku) {
        return Err(bad_parameter("sku", "must not contain control characters"));
    }
    wait_applied(&state, &[ProjectionKind::Inventory], params.after()?).await?;
    let level = state.reads.inventory_level(&sku).await.map_err(read_failed)?;
    Ok(Json(level.ok_or_else(|| ApiError::not_found(format!("no SKU {sku:?}")))?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct InventoryQuery {
    /// Only SKUs whose available stock is below this.
    #[param(schema_with = filter_schema)]
    below: Option<i64>,
    /// Items per page (default 100).
    #[param(schema_with = limit_schema)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(schema_with = text_schema)]
    cursor: Option<String>,
    #[param(schema_with = after_schema)]
    after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InventoryPage {
    pub items: Vec<InventoryLevel>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// Stock per SKU in SKU order.
#[utoipa::path(get, path = "/inventory", tag = "inventory", params(InventoryQuery),
    responses((status = 200, body = InventoryPage), ReadErrors))]
pub async fn inventory_list(State(state): State<ApiState>, Query(q): Q) -> Result<Json<InventoryPage>, ApiError> {
    let params = Params::new(q, &["below", "limit", "cursor"])?;
    let below = params.integer("below", -MAX_FILTER, MAX_FILTER)?;
    let limit = params.limit()?;
    wait_applied(&state, &[ProjectionKind::Inventory], params.after()?).await?;
    let items = state.reads.inventory_page(below, params.text("cursor"), limit).await.map_err(read_failed)?;
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|l| l.sku.clone())).flatten();
    Ok(Json(InventoryPage { items, next_cursor }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PaymentsQuery {
    /// Only this currency.
    #[param(pattern = "^[A-Z]{3}$")]
    currency: Option<String>,
    /// Orders placed at or after this (a date means midnight UTC).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Orders placed before this; a `to` not after `from` is an empty period.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    #[param(schema_with = after_schema)]
    after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentsSummary {
    pub currencies: Vec<CurrencySummary>,
}

/// Payment totals per currency of the orders placed in `[from, to)`.
#[utoipa::path(get, path = "/payments/summary", tag = "payments", params(PaymentsQuery),
    responses((status = 200, body = PaymentsSummary), ReadErrors))]
pub async fn payments_summary(State(state): State<ApiState>, Query(q): Q) -> Result<Json<PaymentsSummary>, ApiError> {
    let params = Params::new(q, &["currency", "from", "to"])?;
    let currency = params.text("currency");
    if let Some(c) = currency {
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(bad_parameter("currency", format!("{c:?} is not an ISO 4217 code like EUR")));
        }
    }
    let from = params.time("from")?.unwrap_or(i64::MIN);
    let to = params.time("to")?.unwrap_or(i64::MAX);
    wait_applied(&state, &[ProjectionKind::Payment], params.after()?).await?;
    // `[from, to)` with `to` not after `from` holds no order.
    let currencies = if from < to {
        state.reads.payments_summary(currency, from, to).await.map_err(read_failed)?
    } else {
        Vec::new()
    };
    Ok(Json(PaymentsSummary { currencies }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct BacklogQuery {
    /// Only orders of this warehouse.
    #[param(schema_with = text_schema)]
    warehouse: Option<String>,
    #[param(schema_with = limit_schema)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^-?[0-9]{1,18}_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    cursor: Option<String>,
    #[param(schema_with = after_schema)]
    after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BacklogPage {
    pub items: Vec<FulfilmentOrder>,
    pub next_cursor: Option<String>,
}

/// Backlog cursors are `<placed_at_us>_<order_id>`: the key the list is ordered by.
fn backlog_cursor(raw: &str) -> Result<(i64, Uuid), ApiError> {
    let bad = || bad_parameter("cursor", "not a cursor this API returned");
    let (us, id) = raw.split_once('_').ok_or_else(bad)?;
    let unsigned = us.strip_prefix('-').unwrap_or(us);
    if unsigned.is_empty() || unsigned.len() > 18 || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok((us.parse().map_err(|_| bad())?, infra::http::hyphenated_uuid(id).ok_or_else(bad)?))
}

/// Orders not shipped yet, oldest first.
#[utoipa::path(get, path = "/fulfilment/backlog", tag = "fulfilment", params(BacklogQuery),
    responses((status = 200, body = BacklogPage), ReadErrors))]
pub async fn fulfilment_backlog(State(state): State<ApiState>, Query(q): Q) -> Result<Json<BacklogPage>, ApiError> {
    let params = Params::new(q, &["warehouse", "limit", "cursor"])?;
    let limit = params.limit()?;
    let cursor = params.text("cursor").map(backlog_cursor).transpose()?;
    wait_applied(&state, &[ProjectionKind::Fulfilment], params.after()?).await?;
    let cursor_key = cursor.map(|(us, id)| (us, id.to_string()));
    let items = state
        .reads
        .fulfilment_backlog(params.text("warehouse"), cursor_key.as_ref().map(|(us, id)| (*us, id.as_str())), limit)
        .await
        .map_err(read_failed)?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|last| format!("{}_{}", last.placed_at.timestamp_micros(), last.order_id)))
        .flatten();
    Ok(Json(BacklogPage { items, next_cursor }))
}

/// The database answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, description = "The database does not answer", body = Health)))]
pub async fn healthz(State(state): State<ApiState>) -> Response {
    match state.reads.ping().await {
        Ok(()) => Json(Health { status: "ok".into() }).into_response(),
        Err(e) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "The health check found the database unreachable. Answering 503."
            );
            let health = Health { status: "database unreachable".into() };
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(health)).into_response()
        }
    }
}
