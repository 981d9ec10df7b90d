//! The one retry policy for waiting on something that will come back (a database, a
//! broker, a schema registry), and its one logging rule, so that every retry loop reads
//! the same in the logs and log levels keep their meaning:
//!
//! - the first failure of a run is a WARN (degraded, recovering by itself);
//! - further attempts are DEBUG while the run is young;
//! - once failures have lasted [`Backoff::LOUD_AFTER`], an ERROR (a person should look),
//!   repeated every [`Backoff::LOUD_AFTER`] while it lasts;
//! - the first success after a WARN is an INFO saying how long it took.
//!
//! Delays double from `first` up to `max`. The caller sleeps (a thread or a task), so the
//! policy serves both blocking and async loops.
use std::time::{Duration, Instant};

/// How loud the failure just recorded is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loudness {
    Warn,
    Quiet,
    Error,
}

#[derive(Debug, Clone)]
pub struct Backoff {
    /// What is retried, as the subject of a sentence: "Applying the batch".
    what: &'static str,
    first: Duration,
    max: Duration,
    next: Duration,
    attempts: u32,
    failing_since: Option<Instant>,
    last_loud: Option<Instant>,
}

impl Backoff {
    /// How long failures may last before they are reported as needing a person.
    pub const LOUD_AFTER: Duration = Duration::from_secs(30);

    /// 100 ms, doubling up to 5 s.
    pub fn new(what: &'static str) -> Self {
        Self::with_limits(what, Duration::from_millis(100), Duration::from_secs(5))
    }

    pub fn with_limits(what: &'static str, first: Duration, max: Duration) -> Self {
        Backoff { what, first, max, next: first, attempts: 0, failing_since: None, last_loud: None }
    }

    /// Counts a failure at `now` and says how loud it is; the pure half of [`Backoff::failed`].
    pub fn record_failure(&mut self, now: Instant) -> (Loudness, Duration) {
        self.attempts += 1;
        let since = *self.failing_since.get_or_insert(now);
        let loudness = if self.attempts == 1 {
            self.last_loud = Some(now);
            Loudness::Warn
        } else if now.saturating_duration_since(since) >= Self::LOUD_AFTER
            && self.last_loud.is_none_or(|at| now.saturating_duration_since(at) >= Self::LOUD_AFTER)
        {
            self.last_loud = Some(now);
            Loudness::Error
        } else {
            Loudness::Quiet
        };
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        (loudness, delay)
    }

    /// Counts a failure, logs it by the rule above with `scope` (a group, a topic) and
    /// returns how long to wait before the next attempt.
    pub fn failed(&mut self, error: &(dyn std::error::Error + 'static), scope: &str) -> Duration {
        let (loudness, delay) = self.record_failure(Instant::now());
        let (what, attempt) = (self.what, self.attempts);
        let failing_for_s = self.failing_for().map_or(0, |d| d.as_secs());
        match loudness {
            Loudness::Warn => tracing::warn!(error, scope, attempt, "{what} failed. Retrying; nothing is lost."),
            Loudness::Quiet => tracing::debug!(error, scope, attempt, "{what} failed again. Retrying."),
            Loudness::Error => tracing::error!(
                error,
                scope,
                attempt,
                failing_for_s,
                "{what} keeps failing. Still retrying and nothing is lost, but this needs a look."
            ),
        }
        delay
    }

    /// The attempt succeeded: logs the recovery if a failure was reported, and starts over.
    pub fn succeeded(&mut self, scope: &str) {
        if self.attempts > 0 {
            let failing_for_s = self.failing_for().map_or(0, |d| d.as_secs());
            tracing::info!(scope, attempts = self.attempts, failing_for_s, "{} works again.", self.what);
        }
        self.reset();
    }

    /// Starts over without logging (a success nobody was told was missing).
    pub fn reset(&mut self) {
        self.next = self.first;
        self.attempts = 0;
        self.failing_since = None;
        self.last_loud = None;
    }

    /// Failures recorded since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn failing_for(&self) -> Option<Duration> {
        self.failing_since.map(|since| since.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_first_up_to_the_limit_and_start_over_after_a_success() {
        let mut b = Backoff::with_limits("x", Duration::from_millis(100), Duration::from_millis(500));
        let now = Instant::now();
        let delays: Vec<u128> = (0..5).map(|_| b.record_failure(now).1.as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.record_failure(now).1, Duration::from_millis(100));
    }

    #[test]
    fn the_first_failure_warns_later_ones_are_quiet_until_they_have_lasted_long_enough_to_need_a_person() {
        let mut b = Backoff::new("x");
        let start = Instant::now();
        assert_eq!(b.record_failure(start).0, Loudness::Warn);
        assert_eq!(b.record_failure(start + Duration::from_secs(10)).0, Loudness::Quiet);
        assert_eq!(b.record_failure(start + Duration::from_secs(29)).0, Loudness::Quiet);
        assert_eq!(b.record_failure(start + Duration::from_secs(30)).0, Loudness::Error);
        // Repeated every LOUD_AFTER while it lasts, not on every attempt.
        assert_eq!(b.record_failure(start + Duration::from_secs(45)).0, Loudness::Quiet);
        assert_eq!(b.record_failure(start + Duration::from_secs(60)).0, Loudness::Error);
        assert_eq!(b.attempts(), 6);
    }
}
