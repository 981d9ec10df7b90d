//! `orderflow serve-api`: the read side over HTTP. Every answer comes from the analyst
//! views, so a rebuild's switch is atomic for it; `after=<partition:offset>` waits until
//! the projections have applied a position the checkout returned (read your writes).
//!
//! [`router`] builds the service over an [`ApiState`], [`run`] serves it until shutdown;
//! tests drive both in process. The OpenAPI document is generated from the handlers'
//! `#[utoipa::path]` attributes and the response types ([`QueryApi`]).
mod dashboard;
mod params;
mod read_your_writes;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use infra::auth::Scope;
use infra::group_inspect::Inspector;
use infra::http::{Access, Need, Routes};
use projections::store::{Reads, StoreError};
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::routes as handler;

pub use infra::http::ApiError;

const DASHBOARD_HTML: &str = include_str!("dashboard.html");
const DASHBOARD_JS: &str = include_str!("dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard.css");

/// The query API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow query API",
        description = "Read the projections. Lists are paginated by an opaque `cursor` and `limit`; `after=<partition>:<offset>` (a position the checkout returned) waits until the projections have applied it."
    ),
    // The service's own paths come from its route list ([`routes`]); these are the
    // shared ones `Routes::finish` mounts.
    paths(infra::http::metrics_text, infra::http::openapi_json),
    components(schemas(infra::http::ErrorBody))
)]
pub struct QueryApi;

pub struct Inner {
    /// The store's readers' door: the query API reads, never writes.
    pub reads: Reads,
    pub topic: String,
    /// How long `after=` may wait before answering 503.
    pub read_wait: Duration,
    /// Available below this counts as low stock on the dashboard.
    pub low_stock: i64,
    /// Reads log end offsets for lag; `None` when no broker is configured.
    pub inspector: Option<Arc<Inspector>>,
    /// Where the broker is, for reading the mirrors' heartbeats.
    pub kafka: infra::KafkaSettings,
    pub access: Access,
    /// The stored offsets `after=` waiters watch, one poller per group.
    pub offsets: read_your_writes::OffsetWatch,
    /// The topic's partitions, for refusing an `after=` on one it does not have.
    pub partitions: read_your_writes::Partitions,
    /// This region, when there are several (`--region`).
    pub region: Option<schemas::Region>,
    /// The other regions whose copies this region's projections read (`--mirror-regions`):
    /// `after=` positions of their logs are read back here, their groups' lag and the
    /// copies' age show on the dashboard.
    pub mirrors: Vec<schemas::Region>,
}

/// The query API's one list of routes, from which the router, the OpenAPI paths and the
/// guard's access list are made. Every read needs the `read` scope; the dashboard page
/// itself holds no data (it asks for a token and then reads `/dashboard.json`), so a
/// browser can load it.
pub fn routes() -> Routes<ApiState> {
    let read = Need::Scope(Scope::Read);
    Routes::new(QueryApi::openapi())
        .route(Need::Public, handler!(dashboard::page))
        .route(Need::Public, handler!(dashboard::script))
        .route(Need::Public, handler!(dashboard::style))
        .route(read, handler!(dashboard::data))
        .route(read, handler!(routes::order))
        .route(read, handler!(routes::timeline))
        .route(read, handler!(routes::inventory_list))
        .route(read, handler!(routes::inventory_one))
        .route(read, handler!(routes::payments_summary))
        .route(read, handler!(routes::fulfilment_backlog))
        .route(Need::Public, handler!(routes::healthz))
}

#[derive(Clone)]
pub struct ApiState(pub Arc<Inner>);

impl std::ops::Deref for ApiState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl ApiState {
    /// Shared state for the API over `reads`; log ends (for lag) come from `kafka` if it
    /// can be reached.
    pub fn new(
        reads: Reads,
        kafka: &infra::KafkaSettings,
        topic: &str,
        read_wait: Duration,
        low_stock: i64,
        access: Access,
    ) -> Self {
        let inspector = match Inspector::new(kafka, Duration::from_secs(3)) {
            Ok(i) => Some(Arc::new(i)),
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "No broker client could be made. The dashboard shows lag without log ends."
                );
                None
            }
        };
        // The recorder must exist before the first request is counted.
        infra::telemetry::prometheus();
        ApiState(Arc::new(Inner {
            reads,
            topic: topic.to_string(),
            read_wait,
            low_stock,
            inspector,
            kafka: kafka.clone(),
            access,
            offsets: Default::default(),
            partitions: Default::default(),
            region: None,
            mirrors: Vec::new(),
        }))
    }

    /// The same API, in `region` whose projections also read `mirrors`' copies.
    pub fn in_region(mut self, region: Option<schemas::Region>, mirrors: Vec<schemas::Region>) -> Self {
        match Arc::get_mut(&mut self.0) {
            Some(inner) => {
                inner.region = region;
                inner.mirrors = mirrors;
            }
            None => tracing::error!("The query API's state is shared already. Its region is not set."),
        }
        self
    }
}

pub fn router(state: ApiState) -> Router {
    let access = state.access.clone();
    routes().finish(state, infra::http::QUERY_API_METRICS, access)
}

/// Serves the API on an already-bound listener until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (limits, tls) = (state.access.limits.connections, state.access.tls.clone());
    infra::serve::serve(listener, router(state), limits, tls, shutdown).await
}

/// A read that failed: a 503 when the database did not answer (the client may retry), a
/// 500 when it answered with an error about the data (a stored value it cannot compute
/// with, a row this release cannot read): retrying fails the same way, so that is logged
/// as an error for an operator. The database's text is logged, never sent.
fn read_failed(e: StoreError) -> ApiError {
    if e.is_about_data() {
        tracing::error!(
            error = &e as &dyn std::error::Error,
            "A query of the projection database failed on the data it holds. Answering 500."
        );
        return ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the projection database could not answer this query from the data it holds; the error is logged",
        );
    }
    tracing::warn!(error = &e as &dyn std::error::Error, "A query of the projection database failed. Answering 503.");
    ApiError::unavailable("the projection database did not answer")
}
