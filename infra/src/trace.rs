//! Traces across processes: one order's path from the HTTP request through Kafka, the
//! consumer groups, the processes and the relay, as OpenTelemetry spans exported with OTLP.
//!
//! The W3C trace context travels in the `traceparent` record header
//! ([`schemas::TRACE_HEADER`]) and in the outbox row of a decided event. Tracing is on only
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`init`]); otherwise [`enabled`] is false and
//! callers make no span and read no header, so it costs nothing.
//!
//! The spans are made with the OpenTelemetry API itself, not through `tracing`: each has
//! an explicit parent taken from a record (a batch applies records of many traces at once),
//! and the service's logs stay as they are.
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::SystemTime;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::error::InfraError;

/// The attribute every span about one order carries: find an order's trace by it.
pub const ORDER_ID: &str = "order.id";

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether spans are made and exported (the process called [`init`] with an endpoint set).
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// Keeps the exporter running; dropping it sends what is still buffered.
#[must_use = "dropping it stops the export"]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "Sending the last spans failed. They are lost; the service is not affected.");
        }
    }
}

/// Starts exporting spans as `service` when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (OTLP over
/// HTTP with protobuf: `<endpoint>/v1/traces`; the other standard `OTEL_*` variables apply
/// too). `None` when it is not set: tracing stays off. Once per process; a second call
/// returns `None` and keeps the first.
pub fn init(service: &str) -> Result<Option<Tracing>, InfraError> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default();
    if endpoint.trim().is_empty() || TRACER.get().is_some() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| InfraError::Config(format!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}: {e}")))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service.to_string()).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let _ = TRACER.set(provider.tracer("orderflow"));
    tracing::info!(%endpoint, service, "Exporting traces with OTLP.");
    Ok(Some(Tracing { provider }))
}

/// The trace context `header` (a `traceparent` value) names, if it is valid W3C trace
/// context; anything else (from any producer) is no context: a new trace starts.
pub fn parse(header: &str) -> Option<SpanContext> {
    // Version 00's exact shape (the propagator alone takes a short trace id).
    let shaped = header.len() == 55
        && header.bytes().enumerate().all(|(i, b)| match i {
            2 | 35 | 52 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
    if !shaped {
        return None;
    }
    struct One<'a>(&'a str);
    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }
    let context = TraceContextPropagator::new().extract(&One(header));
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// `context` as a `traceparent` value.
pub fn format(context: &SpanContext) -> String {
    struct Map(HashMap<String, String>);
    impl Injector for Map {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key.to_string(), value);
        }
    }
    let mut map = Map(HashMap::new());
    let cx = Context::new().with_remote_span_context(context.clone());
    TraceContextPropagator::new().inject_context(&cx, &mut map);
    map.0.remove("traceparent").unwrap_or_default()
}

/// What kind of step a span is (OpenTelemetry's span kinds).
#[derive(Debug, Clone, Copy)]
pub enum StepKind {
    /// Answers a request (the checkout's HTTP routes).
    Server,
    /// Appends a record (the checkout's produce, the relay).
    Producer,
    /// Applies or decides on a record.
    Consumer,
    /// Work inside a service (a batch).
    Internal,
}

impl From<StepKind> for SpanKind {
    fn from(kind: StepKind) -> Self {
        match kind {
            StepKind::Server => SpanKind::Server,
            StepKind::Producer => SpanKind::Producer,
            StepKind::Consumer => SpanKind::Consumer,
            StepKind::Internal => SpanKind::Internal,
        }
    }
}

/// One span of ours. Ended when dropped (or by [`Step::end`]).
pub struct Step {
    span: opentelemetry_sdk::trace::Span,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step").field("context", self.span.span_context()).finish()
    }
}

/// What a new [`Step`] is: its name, kind, parent, links, attributes and start.
pub struct StepBuilder {
    name: String,
    kind: StepKind,
    parent: Option<SpanContext>,
    links: Vec<SpanContext>,
    attributes: Vec<KeyValue>,
    start: Option<SystemTime>,
}

impl Step {
    /// A step named `name`; `None` when tracing is off.
    pub fn builder(name: impl Into<String>, kind: StepKind) -> Option<StepBuilder> {
        enabled().then(|| StepBuilder {
            name: name.into(),
            kind,
            parent: None,
            links: Vec::new(),
            attributes: Vec::new(),
            start: None,
        })
    }

    /// This step's context, to carry to the next hop.
    pub fn context(&self) -> SpanContext {
        self.span.span_context().clone()
    }

    /// This step's context as a `traceparent` header value.
    pub fn traceparent(&self) -> String {
        format(self.span.span_context())
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        self.span.set_attribute(KeyValue::new(key, value));
    }

    /// Marks the step failed, with why.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.span.set_status(Status::error(reason.into()));
    }

    pub fn end(mut self) {
        self.span.end();
    }
}

impl StepBuilder {
    /// Its parent: the step that caused it, possibly in another process (else a new trace).
    pub fn parent(mut self, parent: Option<SpanContext>) -> Self {
        self.parent = parent;
        self
    }

    /// Steps it is related to without being their child (a batch links its records).
    pub fn links(mut self, links: Vec<SpanContext>) -> Self {
        self.links = links;
        self
    }

    pub fn attribute(mut self, key: &'static str, value: impl Into<opentelemetry::Value>) -> Self {
        self.attributes.push(KeyValue::new(key, value));
        self
    }

    /// What the record's key says: the order (`order.id`, an order's events and decisions
    /// are keyed by it) or else the key itself (`sku:<SKU>`).
    pub fn record_key(self, key: &str) -> Self {
        match uuid::Uuid::parse_str(key) {
            Ok(order) => self.attribute(ORDER_ID, order.to_string()),
            Err(_) => self.attribute("messaging.kafka.message.key", key.to_string()),
        }
    }

    /// When it started, if earlier than now.
    pub fn started(mut self, at: SystemTime) -> Self {
        self.start = Some(at);
        self
    }

    pub fn start(self) -> Option<Step> {
        let tracer = TRACER.get()?;
        let mut builder = tracer
            .span_builder(self.name)
            .with_kind(self.kind.into())
            .with_attributes(self.attributes)
            .with_links(self.links.into_iter().map(Link::with_context).collect());
        if let Some(at) = self.start {
            builder = builder.with_start_time(at);
        }
        let parent = match self.parent {
            Some(parent) => Context::new().with_remote_span_context(parent),
            None => Context::new(),
        };
        Some(Step { span: builder.start_with_context(tracer, &parent) })
    }
}

tokio::task_local! {
    /// The step a request is being answered in, for what it calls (the publisher).
    static CURRENT: SpanContext;
}

/// Runs `work` with `step` as the current step of this task (see [`current`]).
pub async fn within<F: std::future::Future>(step: Option<SpanContext>, work: F) -> F::Output {
    match step {
        Some(step) => CURRENT.scope(step, work).await,
        None => work.await,
    }
}

/// The step this task runs in, if [`within`] set one.
pub fn current() -> Option<SpanContext> {
    CURRENT.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_round_trips_and_anything_else_is_no_context() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse(header).expect("valid");
        assert_eq!(format(&context), header);
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn with_tracing_off_no_step_is_made() {
        assert!(!enabled());
        assert!(Step::builder("x", StepKind::Internal).is_none());
    }
}
