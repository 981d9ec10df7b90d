//! Timers between batches: a group whose kind fires timers (the order process's payment
//! timeouts, see [`projections::registry::GroupKind::fires_timers`]) fires the due ones of
//! the partitions this member owns, on the member's thread, so never during one of its
//! batches; the store serializes it with other members' batches through the offset rows.
use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::consumer::Consumer;

use super::config::MemberConfig;
use super::env::BatchEnv;
use crate::metrics as m;

/// How often a member of such a group looks for due timers.
pub(super) const TIMER_EVERY: Duration = Duration::from_millis(250);

/// Whether this consumer of a member fires its group's timers: the one reading the
/// group's first topic (the order process's orders topic, whose partitions the timers
/// belong to).
pub(super) fn fires_timers(config: &MemberConfig) -> bool {
    config.kind.fires_timers()
        && config.kind.reads().first().map(|role| role.name(&config.decisions.orders_topic)).as_ref()
            == Some(&config.topic)
}

pub(super) fn fire_timers(env: &BatchEnv<'_>, owned: &BTreeSet<i32>) {
    let BatchEnv { consumer, config, batches, codec, .. } = *env;
    if !fires_timers(config) {
        return;
    }
    let partitions: Vec<i32> = owned.iter().copied().collect();
    let fired = consumer.context().runtime.block_on(batches.fire_due_timers(
        config.kind,
        &config.group,
        &config.topic,
        &partitions,
        codec,
    ));
    match fired {
        Ok(0) => {}
        Ok(n) => {
            m::timers_fired(&config.group, n);
            tracing::info!(group = %config.group, timers = n, "Payment timers fired.");
            if let Some(notify) = &config.outbox_written {
                notify.notify_one();
            }
        }
        Err(e) => tracing::warn!(error = &e as &dyn std::error::Error, group = %config.group,
            "Firing due timers failed. They fire at the next look."),
    }
}
