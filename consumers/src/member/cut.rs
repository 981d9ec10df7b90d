//! When the member cuts the next batch, and how long it polls before looking again: a
//! pure rule over what the buffer holds, so it is tested without a broker.
//!
//! - A batch is cut when it is **full**, or when it is **due** (its first record waited
//!   `batch_wait`) and **no batch is in flight**: while one is, a due batch keeps growing,
//!   so a database slower than the log gets larger batches and caught up, batches hold
//!   what a few milliseconds bring.
//! - An empty buffer polls long (nothing to cut); a buffer waiting behind a batch in
//!   flight looks again after a millisecond (to start the next one as soon as that one is
//!   done); otherwise it polls until the batch is due (librdkafka hands a record over the
//!   moment it has one).
//! - A rebalance is not part of this rule: the batch in flight is finished before the
//!   buffer is cut to the new assignment ([`super::reading::Reading::reassigned`]).
use std::time::Duration;

/// What the cut rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BufferState {
    /// Records buffered.
    pub len: usize,
    /// How long since the oldest buffered record arrived.
    pub age: Duration,
    /// Whether a batch is being applied.
    pub in_flight: bool,
}

/// The two batch settings the rule uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CutRule {
    pub batch_max: usize,
    pub batch_wait: Duration,
}

/// The longest an empty buffer polls before the loop looks at stop requests and timers.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How often a buffer waiting behind a batch in flight looks whether that one is done.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(1);

impl CutRule {
    /// Whether to cut the buffer into a batch now.
    pub fn cut(self, state: BufferState) -> bool {
        let full = state.len >= self.batch_max;
        let due = state.len > 0 && state.age >= self.batch_wait;
        full || (due && !state.in_flight)
    }

    /// How long to poll before looking again.
    pub fn poll_wait(self, state: BufferState) -> Duration {
        if state.len == 0 {
            self.batch_wait.max(IDLE_POLL)
        } else if state.in_flight {
            IN_FLIGHT_POLL
        } else {
            self.batch_wait.saturating_sub(state.age)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: CutRule = CutRule { batch_max: 100, batch_wait: Duration::from_millis(5) };

    fn state(len: usize, age_ms: u64, in_flight: bool) -> BufferState {
        BufferState { len, age: Duration::from_millis(age_ms), in_flight }
    }

    #[test]
    fn a_full_buffer_is_cut_at_once_even_with_a_batch_in_flight() {
        assert!(RULE.cut(state(100, 0, false)));
        assert!(RULE.cut(state(100, 0, true)));
        assert!(RULE.cut(state(250, 1, true)));
    }

    #[test]
    fn a_due_buffer_is_cut_only_when_no_batch_is_in_flight() {
        assert!(RULE.cut(state(1, 5, false)));
        assert!(RULE.cut(state(40, 9, false)));
        assert!(!RULE.cut(state(40, 9, true)), "a due batch grows while one is in flight");
    }

    #[test]
    fn a_buffer_that_is_neither_full_nor_due_waits_and_an_empty_one_is_never_cut() {
        assert!(!RULE.cut(state(99, 4, false)));
        assert!(!RULE.cut(state(0, 60_000, false)));
        assert!(!RULE.cut(state(0, 60_000, true)));
    }

    #[test]
    fn polls_long_when_empty_briefly_behind_a_batch_in_flight_and_otherwise_until_due() {
        assert_eq!(RULE.poll_wait(state(0, 0, false)), Duration::from_millis(100));
        assert_eq!(RULE.poll_wait(state(0, 0, true)), Duration::from_millis(100));
        let slow = CutRule { batch_max: 100, batch_wait: Duration::from_millis(250) };
        assert_eq!(slow.poll_wait(state(0, 0, false)), Duration::from_millis(250));
        assert_eq!(RULE.poll_wait(state(3, 1, true)), Duration::from_millis(1));
        assert_eq!(RULE.poll_wait(state(3, 2, false)), Duration::from_millis(3));
        assert_eq!(RULE.poll_wait(state(3, 7, false)), Duration::ZERO);
    }
}
