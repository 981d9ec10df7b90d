//! One member of a projection's consumer group.
//!
//! The member polls a `BaseConsumer` on a dedicated thread. Why not a `StreamConsumer`
//! inside a task: rdkafka runs the rebalance callback on the polling thread, and that
//! callback must read offsets from the database before assigning; doing that inside a
//! tokio worker would block it (and `block_on` there panics).
//!
//! A batch is applied on the runtime while the thread polls the next one, so decoding,
//! folding and the database's work overlap with reading the log (one batch in flight at
//! most; the next starts when it finished). Whatever changes what the member owns waits
//! for it: after a rebalance, the batch in flight finishes before the buffer is cut to the
//! new assignment, and a partition the batch rewound loses its buffered records. A
//! rebalance callback may run while a batch is in flight; the database decides who
//! applies what (the batch holds its offset rows; a new owner waits for them and skips
//! what was applied).
//!
//! One file per concern: `config` (settings and their defaults), `start` (the consumer and
//! its thread), `poll` (the loop), `cut` (when a batch is cut: a pure rule), `flight` (the
//! batch in flight, finished in one place), `applied` (the bookkeeping of a committed batch),
//! `env` (what a batch needs from the member), `retry` and `bisect` (backoff, and halving to
//! find a refused record), `causal` (what a batch waits for on another topic first),
//! `reading` (contiguity, rewinds and rebalances: pure rules), `timers` (the hook for groups
//! that fire timers), `stats` (counters and the handle), `steps` (a batch's trace spans, when tracing is on).
mod applied;
mod bisect;
mod causal;
mod config;
mod cut;
mod env;
mod flight;
mod poll;
mod reading;
mod retry;
mod start;
mod stats;
mod steps;
mod timers;

pub use config::{defaults, GroupProtocol, MemberConfig};
pub use start::run_member;
pub use stats::{MemberHandle, MemberStats, Timings};
