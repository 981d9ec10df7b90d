//! Projection logic as pure functions of (state, event): no I/O, no clock, no randomness,
//! so the same log always yields the same rows, and tests read as given / when / then.
pub mod fulfilment;
pub mod history;
pub mod inventory;
pub mod payment;

use schemas::{Event, EventKind};

/// Why an event cannot be applied to the state it meets. The event is parked in
/// `dead_letters` with this reason; later events of the same order are parked too, so
/// nothing is applied out of order around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(pub String);

impl Rejection {
    pub fn new(reason: impl Into<String>) -> Self {
        Rejection(reason.into())
    }
}

/// A change of one SKU's stock, summed per SKU within a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkuDelta {
    pub on_hand: i64,
    pub reserved: i64,
    pub shipped: i64,
}

impl SkuDelta {
    pub fn add(&mut self, other: SkuDelta) {
        self.on_hand += other.on_hand;
        self.reserved += other.reserved;
        self.shipped += other.shipped;
    }
}

/// What one projection makes of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect<S> {
    /// The order's new state, if the event changed it.
    pub order: Option<S>,
    /// Stock changes (inventory only).
    pub sku_deltas: Vec<(String, SkuDelta)>,
}

impl<S> Effect<S> {
    pub fn order(state: S) -> Self {
        Effect { order: Some(state), sku_deltas: Vec::new() }
    }
}

/// Where a record sits in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogPosition {
    pub partition: i32,
    pub offset: i64,
}

/// A projection: which events it reads and how one changes an order's state.
pub trait Projection {
    /// Per-order state, one row per order.
    type State: Clone + std::fmt::Debug + PartialEq;
    /// The consumer group and table prefix.
    const NAME: &'static str;
    fn wants(kind: EventKind) -> bool;
    fn apply(state: Option<&Self::State>, event: &Event) -> Result<Effect<Self::State>, Rejection>;
    /// `apply` for projections that also record where the event sits in the log and who
    /// published it; the store calls this one.
    fn apply_at(
        state: Option<&Self::State>,
        event: &Event,
        _at: LogPosition,
        _published_by: Option<&str>,
    ) -> Result<Effect<Self::State>, Rejection> {
        Self::apply(state, event)
    }
}
