//! What both HTTP services (the checkout and the query API) share: the error body, request
//! metrics, `/metrics`, `/healthz`, `/openapi.json` and the fallback for unknown routes.
//! A service lists its routes once ([`Routes`]: each handler with who may call it, which
//! mounts it, documents it and guards it) and calls [`Routes::finish`], which adds
//! authentication, per-principal rate limits, a request timeout and a bound on requests in
//! flight.
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};

use crate::trace::{Step, StepKind};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use governor::Quota;
use serde::Serialize;

pub use crate::admission::{limit_defaults, Limits};
use crate::admission::{Admission, HEALTH_PATHS};
pub use crate::api_error::{ApiError, ErrorBody};
use crate::auth::{Authenticator, Denied, Scope};

/// The names of one service's request metrics (both have their own, so dashboards can
/// tell them apart without a label).
#[derive(Debug, Clone, Copy)]
pub struct RequestMetrics {
    /// Counter, labels `route` (the template, never the raw path: ids would explode the
    /// label set) and `status`.
    pub requests: &'static str,
    /// Histogram of seconds, label `route`.
    pub seconds: &'static str,
}

pub const CHECKOUT_METRICS: RequestMetrics =
    RequestMetrics { requests: "orderflow_checkout_requests_total", seconds: "orderflow_checkout_request_seconds" };
pub const QUERY_API_METRICS: RequestMetrics =
    RequestMetrics { requests: "orderflow_api_requests_total", seconds: "orderflow_api_request_seconds" };

async fn measure(names: RequestMetrics, request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let step = request_step(&request, &route);
    let response = crate::trace::within(step.as_ref().map(Step::context), next.run(request)).await;
    let status = response.status().as_u16();
    if let Some(mut step) = step {
        step.set("http.response.status_code", i64::from(status));
        if status >= 500 {
            step.fail(format!("answered {status}"));
        }
        step.end();
    }
    metrics::counter!(names.requests, "route" => route.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!(names.seconds, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

/// The request's step when tracing is on: a child of the caller's `traceparent` if it sent
/// a valid one, else a new trace. Probes and scrapes are not traced.
fn request_step(request: &Request, route: &str) -> Option<Step> {
    if !crate::trace::enabled() || matches!(route, "/healthz" | "/readyz" | "/metrics") {
        return None;
    }
    let parent =
        request.headers().get(schemas::TRACE_HEADER).and_then(|v| v.to_str().ok()).and_then(crate::trace::parse);
    Step::builder(format!("{} {route}", request.method()), StepKind::Server)?
        .parent(parent)
        .attribute("http.request.method", request.method().to_string())
        .attribute("http.route", route.to_string())
        .start()
}

/// Prometheus metrics of this process.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics_text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::prometheus().render()).into_response()
}

/// The service is up (it answers); readiness of its dependencies is the service's own route.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or what is wrong.
    pub status: String,
}

/// This service's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)))]
pub async fn openapi_json(doc: std::sync::Arc<str>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.to_string()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json")
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone: health checks, and the dashboard page (which holds no data).
    Public,
    /// Any valid token.
    Authenticated,
    /// A valid token with this scope.
    Scope(Scope),
}

/// One route's access rule, made by [`Routes::route`] from the same registration that
/// mounts the handler and documents it: the guard enforces the list and the OpenAPI
/// document states it, so the three cannot disagree. A route missing from the list needs a
/// token (never open by omission).
#[derive(Debug, Clone)]
pub struct RouteAccess {
    pub method: Method,
    /// The route template, as in the router (`/orders/{order_id}/cancel`).
    pub path: String,
    pub need: Need,
}

/// The routes [`Routes::finish`] adds to every service.
fn shared_routes() -> [RouteAccess; 2] {
    [
        RouteAccess { method: Method::GET, path: "/metrics".into(), need: Need::Scope(Scope::Ops) },
        RouteAccess { method: Method::GET, path: "/openapi.json".into(), need: Need::Authenticated },
    ]
}

/// A service's one list of routes: each entry (`routes!(handler)` of `utoipa_axum`, with
/// who may call it) mounts the handler, adds its `#[utoipa::path]` to the OpenAPI document
/// and its access rule to the guard's list.
pub struct Routes<S> {
    router: utoipa_axum::router::OpenApiRouter<S>,
    access: Vec<RouteAccess>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// An empty list over the service's document (its info, tags and shared schemas).
    pub fn new(openapi: utoipa::openapi::OpenApi) -> Self {
        Routes { router: utoipa_axum::router::OpenApiRouter::with_openapi(openapi), access: Vec::new() }
    }

    /// Adds the handlers of `routes` (every method of every path they document), callable
    /// by whoever `need` admits.
    pub fn route(mut self, need: Need, routes: utoipa_axum::router::UtoipaMethodRouter<S>) -> Self {
        for (path, item) in &routes.1.paths {
            for (method, operation) in [(Method::GET, &item.get), (Method::POST, &item.post)] {
                if operation.is_some() {
                    self.access.push(RouteAccess { method, path: path.clone(), need });
                }
            }
        }
        self.router = self.router.routes(routes);
        self
    }

    /// Every route as listed, for tests and tools.
    pub fn access(&self) -> &[RouteAccess] {
        &self.access
    }

    /// The service: its routes over `state`, plus `/metrics`, `/openapi.json`, the JSON 404
    /// for unknown routes, authentication and the abuse limits, and the request metrics.
    pub fn finish(self, state: S, metrics: RequestMetrics, access: Access) -> Router {
        let (router, openapi) = self.router.split_for_parts();
        Service { metrics, openapi, routes: self.access, access }.finish(router.with_state(state))
    }
}

/// Who may call what, how much, and how they reach the service.
#[derive(Clone)]
pub struct Access {
    pub auth: Arc<Authenticator>,
    pub limits: Limits,
    /// The listener's certificate when it serves HTTPS; plain HTTP without.
    pub tls: Option<Arc<crate::tls::Tls>>,
}

impl Access {
    pub fn new(auth: Authenticator, limits: Limits) -> Self {
        Access { auth: Arc::new(auth), limits, tls: None }
    }

    /// The same, served over HTTPS with `tls`.
    pub fn with_tls(self, tls: Arc<crate::tls::Tls>) -> Self {
        Access { tls: Some(tls), ..self }
    }
}

type PrincipalLimiter = governor::DefaultKeyedRateLimiter<String>;

struct Guard {
    auth: Arc<Authenticator>,
    routes: Vec<RouteAccess>,
    limiter: Option<PrincipalLimiter>,
    admission: Arc<Admission>,
}

/// What the guard decides for a request before authenticating it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Need(Need),
    /// A known route, a method it does not take; the methods it takes.
    MethodNotAllowed(String),
}

impl Guard {
    fn rule(&self, method: &Method, path: Option<&str>) -> Rule {
        let Some(path) = path else { return Rule::Need(Need::Authenticated) };
        let mut allowed = Vec::new();
        for rule in self.routes.iter().filter(|r| r.path == path) {
            if rule.method == *method {
                return Rule::Need(rule.need);
            }
            allowed.push(rule.method.as_str());
        }
        // A route the list does not name needs a token; a listed route's other methods
        // are refused here, never handed to a handler.
        if !allowed.is_empty() {
            Rule::MethodNotAllowed(allowed.join(", "))
        } else {
            Rule::Need(Need::Authenticated)
        }
    }
}

/// Authenticates the caller, checks the route's scope and the principal's rate, admits the
/// request into the in-flight pool within the principal's share, reads its body within the
/// body-read timeout, and hands the [`Principal`] to the handler as a request extension,
/// answering `503` if the handler takes longer than the request timeout. Health and
/// readiness checks skip all of it.
async fn guard(guard: Arc<Guard>, request: Request, next: Next) -> Response {
    // `MatchedPath` is a shared string: cloning it copies no text.
    let path = request.extensions().get::<MatchedPath>().cloned();
    if path.as_ref().is_some_and(|p| HEALTH_PATHS.contains(&p.as_str())) {
        return next.run(request).await;
    }
    let need = match guard.rule(request.method(), path.as_ref().map(MatchedPath::as_str)) {
        Rule::Need(need) => need,
        Rule::MethodNotAllowed(allowed) => {
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
            .into_response();
            if let Ok(value) = allowed.parse() {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return response;
        }
    };
    if need == Need::Public {
        let _ticket = match guard.admission.admit(None) {
            Ok(ticket) => ticket,
            Err(refused) => return refused.into_response(None),
        };
        return within_timeout(&guard.admission, next.run(request)).await;
    }
    let needed = match need {
        Need::Scope(scope) => Some(scope),
        _ => None,
    };
    let principal = match guard.auth.authenticate(request.headers()).await {
        Ok(principal) => principal,
        Err(denied) => return refusal(&denied, needed),
    };
    if let Some(scope) = needed.filter(|scope| !principal.may(*scope)) {
        let denied = Denied::Forbidden { principal: principal.name.clone(), needed: scope };
        return refusal(&denied, needed);
    }
    if let Some(limiter) = &guard.limiter {
        if let Err(not_until) = limiter.check_key(&principal.name) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            metrics::counter!("orderflow_http_rate_limited_total").increment(1);
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this principal",
            )
            .with("principal", principal.name.clone())
            .retry_after(wait)
            .into_response();
        }
    }
    let _ticket = match guard.admission.admit(Some(&principal.name)) {
        Ok(ticket) => ticket,
        Err(refused) => return refused.into_response(Some(&principal.name)),
    };
    let mut request = match guard.admission.read_body(request).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    request.extensions_mut().insert(principal);
    within_timeout(&guard.admission, next.run(request)).await
}

/// The handler's answer, or `503` once the request timeout has passed.
async fn within_timeout(admission: &Admission, run: impl std::future::Future<Output = Response>) -> Response {
    match tokio::time::timeout(admission.limits().request_timeout, run).await {
        Ok(response) => response,
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", "the request took too long")
            .retry_after(Duration::from_secs(1))
            .into_response(),
    }
}

fn refusal(denied: &Denied, needed: Option<Scope>) -> Response {
    let (status, code) = match denied {
        Denied::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
        Denied::Missing | Denied::Invalid(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
    };
    let mut error = ApiError::new(status, code, denied.to_string());
    if let Some(scope) = needed {
        error = error.with("scope", scope.as_str());
    }
    let mut response = error.into_response();
    if status == StatusCode::UNAUTHORIZED {
        // RFC 6750: say which scheme to use.
        let challenge = match needed {
            Some(scope) => format!("Bearer scope=\"{scope}\""),
            None => "Bearer".to_string(),
        };
        if let Ok(value) = challenge.parse() {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
    }
    response
}

/// The shared routes and layers around a service's own router.
struct Service {
    metrics: RequestMetrics,
    /// The service's OpenAPI document, generated from its types.
    openapi: utoipa::openapi::OpenApi,
    /// Every route of the service and who may call it.
    routes: Vec<RouteAccess>,
    access: Access,
}

impl Service {
    fn finish(self, router: Router) -> Router {
        let routes: Vec<RouteAccess> = self.routes.into_iter().chain(shared_routes()).collect();
        let mut openapi = self.openapi;
        document_access(&mut openapi, &routes);
        let doc: std::sync::Arc<str> = match serde_json::to_string(&openapi) {
            Ok(doc) => doc.into(),
            Err(e) => {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "The OpenAPI document does not serialize. This is a bug; /openapi.json answers 500."
                );
                "{}".into()
            }
        };
        let names = self.metrics;
        let limits = self.access.limits;
        let limiter = limits.per_principal_per_second.map(|rate| governor::RateLimiter::keyed(Quota::per_second(rate)));
        let guard_state =
            Arc::new(Guard { auth: self.access.auth, routes, limiter, admission: Admission::new(limits) });
        router
            .route("/metrics", get(metrics_text))
            .route("/openapi.json", get(move || openapi_json(doc.clone())))
            .fallback(not_found)
            .layer(middleware::from_fn(move |request, next| guard(guard_state.clone(), request, next)))
            .layer(middleware::from_fn(move |request, next| measure(names, request, next)))
    }
}

/// States the access rules in the OpenAPI document: the bearer scheme, each operation's
/// security requirement, and the answers the guard and limits can give.
fn document_access(openapi: &mut utoipa::openapi::OpenApi, routes: &[RouteAccess]) {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
    use utoipa::openapi::{Content, Ref, ResponseBuilder};
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("opaque or JWT").build()),
    );
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))))
            .build()
    };
    for (path, item) in openapi.paths.paths.iter_mut() {
        for (method, operation) in [(Method::GET, item.get.as_mut()), (Method::POST, item.post.as_mut())] {
            let Some(operation) = operation else { continue };
            if method == Method::POST {
                // Every POST needs a JSON body, even where `{}` or `null` is all it says: a
                // JSON content type is what a cross-site form post cannot send.
                if let Some(body) = operation.request_body.as_mut() {
                    body.required = Some(utoipa::openapi::Required::True);
                }
                operation
                    .responses
                    .responses
                    .entry("408".into())
                    .or_insert_with(|| error("The request body did not arrive within the body-read timeout").into());
                operation
                    .responses
                    .responses
                    .entry("413".into())
                    .or_insert_with(|| error("The request body is larger than the service takes").into());
            }
            let need =
                routes.iter().find(|r| &r.path == path && r.method == method).map_or(Need::Authenticated, |r| r.need);
            let responses = &mut operation.responses.responses;
            responses.entry("503".into()).or_insert_with(|| {
                error("Overloaded (too many requests in flight, or this principal's share of them) or timed out: retry after Retry-After").into()
            });
            let scopes: Vec<&str> = match need {
                Need::Public => continue,
                Need::Authenticated => Vec::new(),
                Need::Scope(scope) => vec![scope.as_str()],
            };
            operation.security = Some(vec![SecurityRequirement::new("bearer", scopes)]);
            responses.insert("401".into(), error("No bearer token, or one that is not valid").into());
            if matches!(need, Need::Scope(_)) {
                responses.insert("403".into(), error("The token lacks the scope this route needs (`scope`)").into());
            }
            responses
                .insert("429".into(), error("This principal's rate limit is exceeded: retry after Retry-After").into());
        }
    }
}

/// A UUID in its hyphenated form only (what OpenAPI's `format: uuid` means); the braced,
/// URN and bare-hex spellings other parsers accept are refused.
pub fn hyphenated_uuid(raw: &str) -> Option<uuid::Uuid> {
    let hyphens = [8, 13, 18, 23];
    let shaped = raw.len() == 36
        && raw.bytes().enumerate().all(|(i, b)| if hyphens.contains(&i) { b == b'-' } else { b.is_ascii_hexdigit() });
    shaped.then(|| uuid::Uuid::parse_str(raw).ok()).flatten()
}

/// Serves `GET /metrics` alone on an already-bound listener until `shutdown` resolves (for
/// processes that serve no API, such as consumer group members).
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(metrics_text));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyphenated_uuids_are_uuids() {
        let id = "0b7a0e6c-3f5e-4d1c-9a3e-2b1f4c5d6e7f";
        assert!(hyphenated_uuid(id).is_some());
        assert!(hyphenated_uuid(&id.to_uppercase()).is_some());
        for bad in ["0b7a0e6c3f5e4d1c9a3e2b1f4c5d6e7f", "{0b7a0e6c-3f5e-4d1c-9a3e-2b1f4c5d6e7f}", "not-a-uuid", ""] {
            assert!(hyphenated_uuid(bad).is_none(), "{bad}");
        }
    }
}
