//! The wheel's clock against a forward step of the wall clock.
//!
//! A wall clock that jumps ahead (a bad NTP step, an operator's `date -s`)
//! would release every event due within the jump at once, early. NTP slews
//! small errors and does not jump, so a wall clock that moved more than
//! [`STEP_TOLERANCE_MS`] further than the monotonic clock between two reads
//! has stepped. Then, for [`DISTRUST_FOR`], the guard answers the old time
//! carried forward by the monotonic clock: long enough for a cluster's clock
//! monitor to judge the new time (and stop this node leading if it is off).
//! After that the new time is accepted: a single node cannot tell which of
//! the two was right.

use std::time::{Duration, Instant};

/// Largest forward move of the wall clock against the monotonic one between
/// two reads that is not a step.
pub const STEP_TOLERANCE_MS: i64 = 100;
/// How long a stepped wall clock is not believed.
pub const DISTRUST_FOR: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct StepGuard {
    /// The last wall time believed and when (monotonic) it was read.
    anchor: Option<(i64, Instant)>,
    distrust_until: Option<Instant>,
}

impl StepGuard {
    /// The time to fire by, given the wall clock `wall_ms` read at `mono`.
    pub fn now(&mut self, wall_ms: i64, mono: Instant) -> i64 {
        let Some((w0, m0)) = self.anchor else {
            self.anchor = Some((wall_ms, mono));
            return wall_ms;
        };
        let carried = w0 + mono.saturating_duration_since(m0).as_millis() as i64;
        if let Some(until) = self.distrust_until {
            if mono < until {
                return carried.min(wall_ms);
            }
            tracing::info!("the wall clock's step is accepted");
            self.distrust_until = None;
        } else if wall_ms > carried + STEP_TOLERANCE_MS {
            tracing::warn!(
                step_ms = wall_ms - carried,
                "the wall clock jumped ahead; firing by the time before the jump for {DISTRUST_FOR:?}"
            );
            self.distrust_until = Some(mono + DISTRUST_FOR);
            return carried;
        }
        self.anchor = Some((wall_ms, mono));
        wall_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_step_is_not_believed_for_a_while() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut g = StepGuard::default();
        assert_eq!(g.now(10_000, at(0)), 10_000);
        // Drift within the tolerance is followed.
        assert_eq!(g.now(10_150, at(100)), 10_150);
        // A 3 s jump: the old time, carried by the monotonic clock.
        assert_eq!(g.now(13_250, at(200)), 10_250);
        assert_eq!(g.now(14_000, at(950)), 11_000);
        // A step back meanwhile is followed (the wheel never goes back itself).
        assert_eq!(g.now(10_900, at(1_000)), 10_900);
        // After the distrust period the new time counts.
        let late = 200 + DISTRUST_FOR.as_millis() as u64;
        assert_eq!(g.now(15_000, at(late)), 15_000);
        assert_eq!(g.now(15_010, at(late + 10)), 15_010);
    }

    #[test]
    fn pauses_and_backward_steps_are_not_steps() {
        let t0 = Instant::now();
        let mut g = StepGuard::default();
        g.now(50_000, t0);
        // A 5 s stall moves both clocks alike.
        assert_eq!(g.now(55_000, t0 + Duration::from_secs(5)), 55_000);
        assert_eq!(g.now(54_000, t0 + Duration::from_secs(5)), 54_000);
        assert_eq!(g.now(54_090, t0 + Duration::from_secs(5)), 54_090);
    }
}
