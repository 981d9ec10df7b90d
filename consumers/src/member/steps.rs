//! The member's steps of a batch when tracing is on (see [`infra::trace`]): one per record
//! that carries trace context, a child of the step that appended it (a projection applies
//! it, a process decides on it), and one for the batch, linking them. A traced record is
//! pointed at its own step, so the events a process decides about it continue from there.
use infra::trace::{Step, StepKind};
use projections::registry::GroupKind;
use projections::store::LogRecord;

/// Links a batch's step keeps to its records' steps, at most (a big catch-up batch would
/// otherwise make one huge span).
const MAX_LINKS: usize = 128;

pub(super) struct BatchSteps {
    batch: Step,
    records: Vec<Step>,
}

impl BatchSteps {
    /// Starts the steps of a batch of `records`; `None` when tracing is off.
    pub fn start(group: &str, kind: GroupKind, topic: &str, records: &mut [LogRecord]) -> Option<BatchSteps> {
        if !infra::trace::enabled() {
            return None;
        }
        let name = match kind {
            GroupKind::Projection(p) => format!("apply {}", p.name()),
            GroupKind::Process(p) => format!("decide {}", p.name()),
        };
        let mut steps = Vec::new();
        for record in records.iter_mut() {
            let Some(parent) = record.trace_parent.as_deref().and_then(infra::trace::parse) else { continue };
            let mut builder = Step::builder(name.clone(), StepKind::Consumer)?
                .parent(Some(parent))
                .attribute("messaging.consumer.group.name", group.to_string())
                .attribute("messaging.destination.name", topic.to_string())
                .attribute("messaging.kafka.partition", i64::from(record.partition))
                .attribute("messaging.kafka.offset", record.offset);
            if let Some(key) = record.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()) {
                builder = builder.record_key(key);
            }
            if let Some(step) = builder.start() {
                record.trace_parent = Some(step.traceparent());
                steps.push(step);
            }
        }
        let links = steps.iter().take(MAX_LINKS).map(Step::context).collect();
        let batch = Step::builder(format!("batch {}", kind.name()), StepKind::Internal)?
            .links(links)
            .attribute("messaging.consumer.group.name", group.to_string())
            .attribute("messaging.destination.name", topic.to_string())
            .attribute("messaging.batch.message_count", records.len() as i64)
            .attribute("orderflow.traced_records", steps.len() as i64)
            .start()?;
        Some(BatchSteps { batch, records: steps })
    }

    /// Ends every step: the batch committed (its views updated, its decisions in the
    /// outbox), or failed with `error` (it is applied again the careful way).
    pub fn end(self, error: Option<String>) {
        let BatchSteps { mut batch, records } = self;
        for mut step in records {
            if let Some(error) = &error {
                step.fail(error.clone());
            }
            step.end();
        }
        if let Some(error) = error {
            batch.fail(error);
        }
        batch.end();
    }
}
