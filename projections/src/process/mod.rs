//! The processes that decide, as pure functions like the projections: the **order
//! process** (per order: asks for stock, confirms or rejects, expires unpaid orders,
//! requests refunds) and the **stock group** (per SKU: reserves or rejects in log order).
//! A decision is the next state plus the events to publish; the store writes both, with
//! the offsets, in one transaction (the events into the outbox), so every decision takes
//! effect exactly once.
//!
//! Emitted events get ids derived from the event that caused them ([`derived_id`]): a
//! decision made again after a crash, or published twice by the relay, carries the same
//! id, and readers drop the copy.
pub mod order;
pub mod recover;
pub mod stock;

use chrono::{DateTime, Utc};
use schemas::Envelope;
use uuid::Uuid;

/// The id of the event a decision emits: a name-based (v5) UUID of the cause and what was
/// decided, so the same decision always has the same id.
pub fn derived_id(cause: Uuid, what: &str) -> Uuid {
    Uuid::new_v5(&cause, what.as_bytes())
}

/// The envelope of an event emitted because of `cause`.
pub fn caused_by(cause: &Envelope, what: &str, now: DateTime<Utc>) -> Envelope {
    Envelope {
        event_id: derived_id(cause.event_id, what),
        occurred_at: now,
        correlation_id: cause.correlation_id,
        causation_id: Some(cause.event_id),
    }
}

/// Everything a decision may depend on besides the state and the input: the time, and the
/// process's settings. Passed in, never read from the clock, so tests choose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub now: DateTime<Utc>,
    /// How long a confirmed order may wait for its payment before it expires.
    pub payment_timeout: std::time::Duration,
}

/// The principal the processes publish their decisions as (the record header the
/// timeline shows as "published by").
pub use schemas::{ORDER_PROCESS_PRINCIPAL, STOCK_PRINCIPAL};

/// What a process's batches need besides the records: the pipeline it decides for and
/// its settings (configuration, not I/O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSettings {
    /// The pipeline's orders topic (the stock topic is named after it).
    pub orders_topic: String,
    pub payment_timeout: std::time::Duration,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings::new(schemas::ORDERS_TOPIC)
    }
}

impl ProcessSettings {
    /// The one default of `--payment-timeout`.
    pub const PAYMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

    /// The settings of a pipeline on `orders_topic`, with the default payment timeout.
    pub fn new(orders_topic: &str) -> Self {
        ProcessSettings { orders_topic: orders_topic.to_string(), payment_timeout: Self::PAYMENT_TIMEOUT }
    }

    /// The context a decision is taken in: now, and the payment timeout.
    pub fn context(&self) -> Context {
        Context { now: schemas::Envelope::now(), payment_timeout: self.payment_timeout }
    }

    /// Where an emitted event goes: stock requests (and forwarded adjustments) to the
    /// stock topic, everything else to the orders topic ([`schemas::topic_of`]).
    pub fn destination(&self, event: &schemas::Event) -> String {
        schemas::topic_of(event.kind(), &self.orders_topic)
    }
}
