//! How often and for how long the client tries again: a bounded number of
//! attempts within a bounded total time, with exponential backoff and jitter.

use std::time::{Duration, Instant};

use rand::Rng;

/// Retry bounds for calls that failed with `Unavailable` or a transport error.
///
/// Attempt `n` (from 1) waits `initial_backoff * 2^(n-1)`, capped at
/// `max_backoff`, with equal jitter (half fixed, half random) before the next.
/// The client stops after `max_attempts` attempts or once `max_elapsed` has
/// passed since the first, whichever comes first, and returns the last error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub max_elapsed: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 10 attempts within 15 s, backoff from 50 ms up to 2 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            max_elapsed: Duration::from_secs(15),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait after attempt `attempt` (1-based) failed.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let full = self
            .initial_backoff
            .saturating_mul(1 << exp)
            .min(self.max_backoff);
        let half = full / 2;
        let jitter_ms = half.as_millis() as u64;
        half + Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_ms))
    }
}

/// One retry loop's progress against its policy.
#[derive(Debug)]
pub(crate) struct Budget {
    policy: RetryPolicy,
    started: Instant,
    attempts: u32,
}

impl Budget {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Budget {
            policy,
            started: Instant::now(),
            attempts: 0,
        }
    }

    /// Records a failed attempt; the wait before the next one, or `None` when
    /// the budget is spent (attempts, or the wait would overrun the total time).
    pub(crate) fn next_wait(&mut self) -> Option<Duration> {
        self.attempts += 1;
        if self.attempts >= self.policy.max_attempts {
            return None;
        }
        let wait = self.policy.backoff(self.attempts);
        (self.started.elapsed() + wait <= self.policy.max_elapsed).then_some(wait)
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for attempt in 1..30 {
            let full = p
                .initial_backoff
                .saturating_mul(1 << (attempt - 1).min(20))
                .min(p.max_backoff);
            let wait = p.backoff(attempt);
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
    }

    #[test]
    fn budget_is_bounded_by_attempts() {
        let mut b = Budget::new(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            ..RetryPolicy::default()
        });
        assert!(b.next_wait().is_some());
        assert!(b.next_wait().is_some());
        assert!(b.next_wait().is_none());
        assert_eq!(b.attempts(), 3);
    }

    #[test]
    fn budget_is_bounded_by_time() {
        let mut b = Budget::new(RetryPolicy {
            max_attempts: 100,
            max_elapsed: Duration::from_millis(10),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
        });
        assert!(b.next_wait().is_none());
    }
}
