//! How far ahead a leader term stores occurrences.
//!
//! Normally a scan takes what comes due within `LOOKAHEAD_MS + GATHER_MS`.
//! When many schedules share an instant (every schedule on cron's
//! `0 * * * * *`), storing them all takes longer than that, and those stored
//! after their time fire late. So the term counts the occurrences it knows
//! are coming, by second, and starts storing a burst early enough for all
//! of it to be stored `LOOKAHEAD_MS` before it is due, at the pace it last
//! stored a backlog (timed whole, from its first scan to its last answer),
//! and at most `MAX_AHEAD_MS` ahead.
//!
//! The counts are learned, not read: from the advances this term proposes
//! (each names the schedule's next occurrence) and the changes it sees
//! applied. So a burst a term has not seen yet (its first minute after it
//! starts leading) is stored as before, and the ones after it on time.
//! Memory is one counter per second that has occurrences, not per schedule.

use std::cell::Cell;
use std::collections::BTreeMap;

use crate::schedule::{GATHER_MS, LOOKAHEAD_MS, MAX_AHEAD_MS};

/// Occurrences a partition is assumed to store per second before it has
/// timed a burst of its own, and at least after: a backlog timed while the
/// node was saturated (by creates, say) understates what it stores once
/// they stop, and a pace below a steady flow's would widen every window.
const FIRST_RATE_PER_S: f64 = 5_000.0;
/// Bursts are planned at this share of the pace last timed: other work
/// (releases, other partitions' bursts) may slow the next one.
const MARGIN: f64 = 0.75;
/// Storing this long is absorbed by the usual window, which takes each
/// second from `LOOKAHEAD_MS + GATHER_MS` ahead: a steady flow the term
/// keeps up with never widens it.
const USUAL_SLACK_MS: i64 = 1_000;
/// Seconds counted, at most: the farthest are dropped beyond it.
const MAX_SECONDS: usize = 4_096;

pub(crate) struct Ahead {
    /// Occurrences known to come due, by second of their nominal time.
    due: BTreeMap<i64, u64>,
    /// Occurrences stored per second in a backlog, as timed.
    rate_per_s: f64,
    /// Whether `rate_per_s` was timed (else it is the first guess).
    timed: bool,
    /// `next_start`, computed once per change of the counts or the pace:
    /// the owner asks at every step, and there may be thousands of seconds.
    next: Cell<Option<Option<i64>>>,
}

impl Default for Ahead {
    fn default() -> Self {
        Ahead {
            due: BTreeMap::new(),
            rate_per_s: FIRST_RATE_PER_S,
            timed: false,
            next: Cell::new(None),
        }
    }
}

fn second(ts: i64) -> i64 {
    ts.div_euclid(1_000)
}

impl Ahead {
    /// A schedule's next occurrence is now at `ts` (0: none).
    pub fn add(&mut self, ts: i64) {
        if ts <= 0 {
            return;
        }
        self.next.set(None);
        *self.due.entry(second(ts)).or_default() += 1;
        if self.due.len() > MAX_SECONDS {
            self.due.pop_last();
        }
    }

    /// The occurrence at `ts` was taken by a scan.
    pub fn taken(&mut self, ts: i64) {
        self.next.set(None);
        let s = second(ts);
        if let Some(n) = self.due.get_mut(&s) {
            *n -= 1;
            if *n == 0 {
                self.due.remove(&s);
            }
        }
    }

    /// A scan saw everything due up to `until`: the seconds it covered whole
    /// hold nothing more (a count there was stale).
    pub fn covered(&mut self, until: i64) {
        self.next.set(None);
        // The seconds that end at or before `until`.
        let kept = self.due.split_off(&(second(until + 1)));
        self.due = kept;
    }

    /// A backlog of `events` took `elapsed_ms` to store, from its first
    /// scan to its last answer.
    pub fn timed(&mut self, events: usize, elapsed_ms: i64) {
        let sample = events as f64 * 1_000.0 / elapsed_ms.max(1) as f64;
        let rate = match self.timed {
            true => 0.5 * (self.rate_per_s + sample),
            false => sample,
        };
        self.rate_per_s = rate.clamp(FIRST_RATE_PER_S, 200_000.0);
        self.timed = true;
        self.next.set(None);
    }

    /// Where a scan at `now` ends: the usual window, or further when a
    /// burst within `MAX_AHEAD_MS` must start being stored now.
    pub fn window_end(&mut self, now: i64) -> i64 {
        self.forget_before(now);
        let mut until = now + LOOKAHEAD_MS + GATHER_MS;
        self.each_start(|end, start| {
            if start <= now {
                until = until.max(end);
            }
        });
        until.min(now + MAX_AHEAD_MS)
    }

    /// When a scan must run for a burst to be stored in time.
    pub fn next_start(&self) -> Option<i64> {
        if let Some(known) = self.next.get() {
            return known;
        }
        let mut first = None::<i64>;
        self.each_start(|_, start| first = Some(first.map_or(start, |f| f.min(start))));
        self.next.set(Some(first));
        first
    }

    /// For each counted second in order that the usual window would store
    /// late, the end of it and when storing must start for everything due
    /// by then to be stored `LOOKAHEAD_MS` before the second begins (never
    /// sooner than the window may reach its end). The others are left to
    /// the usual window, untouched.
    fn each_start(&self, mut f: impl FnMut(i64, i64)) {
        let mut work = 0u64;
        for (&s, &n) in &self.due {
            work += n;
            let storing_ms = (work as f64 * 1_000.0 / (MARGIN * self.rate_per_s)) as i64;
            let early_ms = storing_ms - USUAL_SLACK_MS;
            if early_ms <= GATHER_MS {
                continue;
            }
            let start = s * 1_000 - LOOKAHEAD_MS - early_ms;
            let end = s * 1_000 + 999;
            f(end, start.max(end - MAX_AHEAD_MS));
        }
    }

    fn forget_before(&mut self, now: i64) {
        self.next.set(None);
        self.due = self.due.split_off(&second(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_stored_early_enough_and_a_trickle_is_not() {
        let mut a = Ahead::default();
        let now = 1_000_000;
        let usual = now + LOOKAHEAD_MS + GATHER_MS;
        // A few per second: the usual window.
        for s in 0..10 {
            a.add(now + s * 1_000);
        }
        assert_eq!(a.window_end(now), usual);
        assert_eq!(a.next_start(), None);
        // 15 000 due in the second 10 s from now: at 3 750/s (5 000/s with
        // the margin) it takes 4 s to store them, 1 s of which the usual
        // window absorbs, so storing starts 10 - 3 - 2 = 5 s from now.
        let mut a = Ahead::default();
        let burst = now + 10_000;
        for _ in 0..15_000 {
            a.add(burst);
        }
        let start = a.next_start().unwrap();
        assert!((now + 4_900..now + 5_100).contains(&start), "{start}");
        assert_eq!(
            a.window_end(start - 10),
            start - 10 + LOOKAHEAD_MS + GATHER_MS
        );
        assert_eq!(a.window_end(start), burst + 999);
        // Timed faster: it starts later; timed slower than the first
        // guess, it keeps to the guess.
        let mut slow = Ahead {
            due: a.due.clone(),
            ..Ahead::default()
        };
        assert_eq!(slow.next_start(), Some(start));
        a.timed(40_000, 2_000);
        assert!(a.next_start().is_none_or(|s| s > start));
        slow.timed(1_000, 10_000);
        assert_eq!(slow.next_start(), Some(start));
        // Taken, and the seconds a scan saw whole forgotten.
        for _ in 0..15_000 {
            a.taken(burst);
        }
        a.covered(burst + 999);
        assert_eq!(a.next_start(), None);
    }

    #[test]
    fn a_steady_flow_the_term_keeps_up_with_keeps_the_usual_window() {
        let mut a = Ahead::default();
        let now = 1_000_000;
        // 3 000 a second, for a minute: below the pace assumed (3 750/s).
        for s in 0..60 {
            for _ in 0..3_000 {
                a.add(now + s * 1_000);
            }
        }
        // Taken as the usual window reaches them, second after second.
        a.covered(now + 2_999);
        for s in 0..50 {
            let t = now + s * 1_000;
            assert_eq!(a.window_end(t), t + LOOKAHEAD_MS + GATHER_MS, "at {s} s");
            a.covered(t + 2_999);
        }
    }

    #[test]
    fn never_further_than_the_cap() {
        let mut a = Ahead::default();
        let now = 1_000_000;
        let burst = now + 30_000;
        for _ in 0..1_000_000 {
            a.add(burst);
        }
        // Far too many to store in time: started as far ahead as allowed.
        assert_eq!(a.next_start(), Some(burst + 999 - MAX_AHEAD_MS));
        assert_eq!(a.window_end(now), now + LOOKAHEAD_MS + GATHER_MS);
        // At that start, the window reaches the whole second.
        assert_eq!(a.window_end(burst + 999 - MAX_AHEAD_MS), burst + 999);
        // Seconds gone by are forgotten.
        a.window_end(burst + 1_000);
        assert_eq!(a.next_start(), None);
    }
}
