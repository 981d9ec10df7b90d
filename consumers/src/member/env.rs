//! What applying a batch needs from the member, borrowed for the length of its poll loop.
use std::sync::atomic::AtomicBool;

use projections::store::Batches;
use rdkafka::consumer::BaseConsumer;
use schemas::Codec;

use super::causal::Causes;
use super::config::MemberConfig;
use super::stats::MemberStats;
use crate::context::MemberContext;

/// What applying a batch needs from the member.
#[derive(Clone, Copy)]
pub(super) struct BatchEnv<'a> {
    pub consumer: &'a BaseConsumer<MemberContext>,
    pub config: &'a MemberConfig,
    pub batches: &'a Batches,
    pub codec: &'a Codec,
    pub stop: &'a AtomicBool,
    pub stats: &'a MemberStats,
    /// What a batch waits for before it is applied (the stock requests' adjustments).
    pub causes: Option<&'a Causes>,
}
