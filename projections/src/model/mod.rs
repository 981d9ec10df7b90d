//! Projection logic as pure functions of (state, event): no I/O, no clock, no randomness,
//! so the same log always yields the same rows, and tests read as given / when / then.
pub mod fulfilment;
pub mod history;
pub mod inventory;
pub mod payment;

use schemas::{Event, EventKind};

/// Why an event cannot be applied to the state it meets: a transition its publisher was not
/// allowed to make (a refund above what was captured, a shipment of a dead order, an event
/// for an order nobody placed, a second placement). The event is refused and recorded in
/// `dead_letters` with this reason, already resolved (`skipped`): it changes nothing, and the
/// order's later, legitimate events are applied as if it had never come. Parking, which
/// holds an order's later events back for an operator, is for records the code cannot read
/// or the database cannot store, never for a caller's mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(pub String);

impl Rejection {
    pub fn new(reason: impl Into<String>) -> Self {
        Rejection(reason.into())
    }
}

/// One SKU's levels as the stock group decided them. Decisions about one SKU reach the
/// orders topic under different orders' keys, so in no fixed order; the highest `version`
/// is the newest, and a store keeps only that: every level it shows is one the stock
/// group actually had, never a mix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkuLevel {
    pub on_hand: i64,
    pub reserved: i64,
    pub shipped: i64,
    pub version: i64,
}

/// What one projection makes of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect<S> {
    /// The order's new state, if the event changed it.
    pub order: Option<S>,
    /// SKU levels (inventory only).
    pub sku_levels: Vec<(String, SkuLevel)>,
}

impl<S> Effect<S> {
    pub fn order(state: S) -> Self {
        Effect { order: Some(state), sku_levels: Vec::new() }
    }

    pub fn none() -> Self {
        Effect { order: None, sku_levels: Vec::new() }
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
