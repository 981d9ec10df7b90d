//! The dashboard: one self-contained page (no external assets, so it works offline and
//! behind strict proxies) that polls `/dashboard.json` and draws it.
use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use infra::group_inspect::Inspector;
use infra::http::ErrorBody;
use projections::registry::ProcessKind;
use projections::store::{DailyRevenue, InventoryLevel, StatusCount};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::params::Params;
use super::{read_failed, ApiError, ApiState};

/// The page may load only its own script and style and talk only to this origin; nothing
/// inline runs, no other site may frame it, no form posts anywhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

/// The dashboard page. It holds no data: it asks for a `read` token, keeps it in the tab's
/// session storage and reads `/dashboard.json` with it.
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, description = "The dashboard", content_type = "text/html", body = String)))]
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", super::DASHBOARD_HTML)
}

/// The dashboard's script.
#[utoipa::path(get, path = "/dashboard.js", tag = "dashboard",
    responses((status = 200, description = "The dashboard's script", content_type = "text/javascript", body = String)))]
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", super::DASHBOARD_JS)
}

/// The dashboard's style sheet.
#[utoipa::path(get, path = "/dashboard.css", tag = "dashboard",
    responses((status = 200, description = "The dashboard's style sheet", content_type = "text/css", body = String)))]
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", super::DASHBOARD_CSS)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents what `Params` parses
pub struct DashboardQuery {
    /// Days of revenue to show (default 14).
    #[param(minimum = 1, maximum = 366)]
    days: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StockSummary {
    /// The threshold below which available stock is low.
    pub low_stock_below: i64,
    pub low: usize,
    /// SKUs with negative available stock.
    pub oversold: usize,
    /// The low SKUs, at most 1,000.
    pub items: Vec<InventoryLevel>,
}

/// How far one partition of a group's topics is behind.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LagPartition {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    /// Null when the broker could not be asked.
    pub log_end: Option<i64>,
    pub lag: Option<i64>,
}

/// One consumer group: a projection's live group, a process group, or (in a region) the
/// group that reads another region's copy.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupLag {
    pub group: String,
    /// What the group runs: a projection (`inventory`, …) or a process (`order-process`,
    /// `stock`).
    pub runs: String,
    /// The topics it reads.
    pub topics: Vec<String>,
    /// Records applied, summed over its partitions.
    pub next_offset: i64,
    /// Records in its topics, summed over their partitions; null when the broker could not
    /// be asked.
    pub log_end: Option<i64>,
    /// Records not applied yet, summed; null when the broker could not be asked.
    pub lag: Option<i64>,
    /// The partition furthest behind; null when none is.
    pub worst: Option<LagPartition>,
    /// Every partition, for the details.
    pub partitions: Vec<LagPartition>,
}

/// How far behind another region this region's copy of its log is.
#[derive(Debug, Serialize, ToSchema)]
pub struct MirrorAge {
    pub region: String,
    /// Now minus MirrorMaker 2's newest heartbeat copied from that region; null when none
    /// was copied yet or the broker did not answer.
    pub age_ms: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParkedCount {
    pub group: String,
    pub parked: i64,
}

/// Everything the page shows, in one answer, so the numbers on screen are consistent.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dashboard {
    pub generated_at: String,
    pub orders_total: i64,
    pub orders_by_status: Vec<StatusCount>,
    /// What the order process decided: orders per status (confirmed, rejected, expired, …).
    pub decisions: Vec<projections::store::DecisionCount>,
    pub inventory: StockSummary,
    pub revenue_per_day: Vec<DailyRevenue>,
    /// One row per group, processes included.
    pub lag: Vec<GroupLag>,
    pub lag_total: i64,
    /// In a region: each other region's copy and its age.
    pub mirrors: Vec<MirrorAge>,
    pub dead_letters: Vec<ParkedCount>,
    pub dead_letters_total: i64,
}

/// What the dashboard page draws.
#[utoipa::path(get, path = "/dashboard.json", tag = "dashboard", params(DashboardQuery),
    responses((status = 200, body = Dashboard),
              (status = 400, description = "A parameter is invalid or unknown", body = ErrorBody),
              (status = 500, description = "The database could not answer from the data it holds", body = ErrorBody),
              (status = 503, description = "The database did not answer", body = ErrorBody)))]
pub async fn data(
    State(state): State<ApiState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Dashboard>, ApiError> {
    let params = Params::new(q, &["days"])?;
    let days = params.integer("days", 1, 366)?.unwrap_or(14);
    let reads = &state.reads;
    let orders_by_status = reads.orders_by_status().await.map_err(read_failed)?;
    let orders_total: i64 = orders_by_status.iter().map(|s| s.orders).sum();
    let decisions = reads.decision_counts().await.map_err(read_failed)?;
    let items = reads.inventory_page(Some(state.low_stock), None, 1000).await.map_err(read_failed)?;
    let oversold = items.iter().filter(|l| l.available < 0).count();
    let now_us = schemas::clock::now_us();
    let revenue_per_day = reads.revenue_per_day(now_us, days).await.map_err(read_failed)?;
    let dead_letters: Vec<ParkedCount> = reads
        .dead_letter_counts()
        .await
        .map_err(read_failed)?
        .into_iter()
        .map(|(group, parked)| ParkedCount { group, parked })
        .collect();
    let lag = lag_rows(&state).await?;
    let mut mirrors = Vec::new();
    for region in &state.mirrors {
        mirrors.push(MirrorAge { region: region.to_string(), age_ms: mirror_age(&state, region).await });
    }
    Ok(Json(Dashboard {
        mirrors,
        generated_at: projections::store::rfc3339(now_us),
        orders_total,
        orders_by_status,
        decisions,
        inventory: StockSummary { low_stock_below: state.low_stock, low: items.len(), oversold, items },
        revenue_per_day,
        lag_total: lag.iter().filter_map(|g| g.lag).sum(),
        lag,
        dead_letters_total: dead_letters.iter().map(|d| d.parked).sum(),
        dead_letters,
    }))
}

async fn lag_rows(state: &ApiState) -> Result<Vec<GroupLag>, ApiError> {
    let live = state.reads.live_projections().await.map_err(read_failed)?;
    // Every group of this region: each projection's live group and both process groups,
    // with the topics each reads; in a region also each projection's group on every other
    // region's copies (the processes decide on this region's log only).
    let mut groups: Vec<(String, String, Vec<String>)> = Vec::new();
    for source in std::iter::once(None).chain(state.mirrors.iter().map(Some)) {
        for l in &live {
            let group = source.map_or(l.group.clone(), |region| projections::registry::mirror_group(&l.group, region));
            let topics = l.projection.reads().iter().map(|role| topic_of(state, source, *role)).collect();
            groups.push((group, l.projection.name().to_string(), topics));
        }
    }
    for process in ProcessKind::ALL {
        let topics = process.reads().iter().map(|role| topic_of(state, None, *role)).collect();
        groups.push((state.reads.process_group(process), process.name().to_string(), topics));
    }
    let mut ends: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    let mut offsets: BTreeMap<String, Vec<projections::store::GroupPartitionOffset>> = BTreeMap::new();
    for topic in groups.iter().flat_map(|(_, _, topics)| topics) {
        if !ends.contains_key(topic) {
            ends.insert(topic.clone(), log_ends(state, topic).await);
            offsets.insert(topic.clone(), state.reads.all_group_offsets(topic).await.map_err(read_failed)?);
        }
    }
    Ok(groups
        .into_iter()
        .map(|(group, runs, topics)| {
            let mut partitions = Vec::new();
            for topic in &topics {
                let stored: BTreeMap<i32, i64> =
                    offsets[topic].iter().filter(|o| o.group == group).map(|o| (o.partition, o.next_offset)).collect();
                let topic_ends = &ends[topic];
                let numbers: std::collections::BTreeSet<i32> =
                    topic_ends.keys().chain(stored.keys()).copied().collect();
                for p in numbers {
                    let next = stored.get(&p).copied().unwrap_or(0);
                    let end = topic_ends.get(&p).copied();
                    partitions.push(LagPartition {
                        topic: topic.clone(),
                        partition: p,
                        next_offset: next,
                        log_end: end,
                        lag: end.map(|e| (e - next).max(0)),
                    });
                }
            }
            let known = |f: fn(&LagPartition) -> Option<i64>| partitions.iter().map(f).sum::<Option<i64>>();
            let worst = partitions.iter().filter(|p| p.lag.unwrap_or(0) > 0).max_by_key(|p| p.lag).cloned();
            GroupLag {
                next_offset: partitions.iter().map(|p| p.next_offset).sum(),
                log_end: known(|p| p.log_end),
                lag: known(|p| p.lag),
                worst,
                group,
                runs,
                topics,
                partitions,
            }
        })
        .collect())
}

/// The name of `role`'s topic, or of its copy from `source`.
fn topic_of(state: &ApiState, source: Option<&schemas::Region>, role: schemas::TopicRole) -> String {
    let own = role.name(&state.topic);
    source.map_or(own.clone(), |region| region.mirrored(&own))
}

/// How far behind `region` this region's copy is, if the broker can say.
async fn mirror_age(state: &ApiState, region: &schemas::Region) -> Option<u64> {
    state.inspector.as_ref()?;
    let (kafka, source) = (state.kafka.clone(), region.to_string());
    match tokio::task::spawn_blocking(move || Inspector::mirror_age(&kafka, &source, std::time::Duration::from_secs(3)))
        .await
    {
        Ok(Ok(age)) => age.map(|a| a.as_millis() as u64),
        Ok(Err(e)) => {
            tracing::warn!(error = &e as &dyn std::error::Error, %region, "Cannot read the mirror's heartbeats.");
            None
        }
        Err(_) => None,
    }
}

/// The log end of every partition of `topic`, or nothing when the broker cannot say.
async fn log_ends(state: &ApiState, topic: &str) -> BTreeMap<i32, i64> {
    let Some(inspector) = state.inspector.clone() else { return BTreeMap::new() };
    let topic = topic.to_string();
    match tokio::task::spawn_blocking(move || inspector.log_ends(&topic)).await {
        Ok(Ok(ends)) => ends,
        Ok(Err(e)) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "Cannot read the log end offsets. The dashboard shows lag without them."
            );
            BTreeMap::new()
        }
        Err(_) => BTreeMap::new(),
    }
}
