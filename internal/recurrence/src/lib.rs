//! When a recurring schedule's occurrences are.
//!
//! A [`Recurrence`] is a rule — a cron expression with seconds ([`Cron`]), a
//! fixed interval from an anchor ([`Every`]) or a list of instants — in an
//! IANA time zone, optionally bounded by a start and an end. Times are unix
//! milliseconds. Occurrences are computed from the rule, never by adding to
//! a previous fire time, so a late fire does not move the next one.
//!
//! **Daylight saving time** (cron only; intervals and lists are absolute):
//! a local time that does not exist (the clock jumps forward over it) has no
//! occurrence; a local time that occurs twice (the clock falls back) fires
//! once, at the first (earlier) instant. So `0 30 2 * * *` in Europe/Berlin
//! skips the spring-forward day and fires once on the fall-back day, and an
//! hourly expression fires once for the repeated hour.
//!
//! A cron expression that matches nothing within five years of the time
//! asked about (`0 0 0 30 2 *`: February 30th) has no next occurrence.
//!
//! Does not know about events, storage or clocks: it is pure computation.

mod cron;

use chrono::{LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

pub use cron::{parse_cron, Cron};

/// Shortest interval.
pub const MIN_EVERY_MS: i64 = 1_000;
/// Most instants in a list.
pub const MAX_TIMES: usize = 1_000;
/// How far a cron search looks ahead.
const SEARCH_YEARS: i32 = 5;

/// Why a rule is refused; `field()` names the schedule field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    #[error("cron: field '{field}' {detail}")]
    Cron { field: &'static str, detail: String },
    #[error("cron: {0}")]
    CronFormat(String),
    #[error("every: {0} ms is too short; the shortest interval is {MIN_EVERY_MS} ms")]
    EveryTooShort(i64),
    #[error("times: is empty; give at least one instant")]
    NoTimes,
    #[error("times: has {0} instants; at most {MAX_TIMES}")]
    TooManyTimes(usize),
    #[error("times: instant {0} is not a positive time in ms since the epoch")]
    BadTime(i64),
    #[error("time_zone: unknown zone {0:?}; use an IANA name such as \"Europe/Berlin\"")]
    UnknownZone(String),
    #[error("end: {end} is before the start {start}")]
    EndBeforeStart { start: i64, end: i64 },
    #[error("start: {0} is not a positive time in ms since the epoch")]
    BadStart(i64),
}

impl RecurrenceError {
    /// The schedule field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            RecurrenceError::Cron { .. } | RecurrenceError::CronFormat(_) => "cron",
            RecurrenceError::EveryTooShort(_) => "every",
            RecurrenceError::NoTimes
            | RecurrenceError::TooManyTimes(_)
            | RecurrenceError::BadTime(_) => "times",
            RecurrenceError::UnknownZone(_) => "time_zone",
            RecurrenceError::EndBeforeStart { .. } => "end",
            RecurrenceError::BadStart(_) => "start",
        }
    }
}

/// Occurrences at `anchor + k * period`, k >= 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Every {
    period_ms: i64,
    anchor_ms: i64,
}

pub fn every(period_ms: i64, anchor_ms: i64) -> Result<Every, RecurrenceError> {
    if period_ms < MIN_EVERY_MS {
        return Err(RecurrenceError::EveryTooShort(period_ms));
    }
    Ok(Every {
        period_ms,
        anchor_ms,
    })
}

impl Every {
    fn next_after(&self, after: i64) -> Option<i64> {
        if after < self.anchor_ms {
            return Some(self.anchor_ms);
        }
        let k = (after - self.anchor_ms) / self.period_ms + 1;
        k.checked_mul(self.period_ms)?.checked_add(self.anchor_ms)
    }

    /// The latest occurrence at or before `at` (if any).
    fn at_or_before(&self, at: i64) -> Option<i64> {
        if at < self.anchor_ms {
            return None;
        }
        Some(self.anchor_ms + (at - self.anchor_ms) / self.period_ms * self.period_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Cron(Cron),
    Every(Every),
    Times(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recurrence {
    rule: Rule,
    zone: Tz,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
}

impl Recurrence {
    /// `zone` is an IANA name; empty means UTC.
    pub fn new(
        rule: Rule,
        zone: &str,
        start_ms: Option<i64>,
        end_ms: Option<i64>,
    ) -> Result<Recurrence, RecurrenceError> {
        let zone: Tz = match zone {
            "" => Tz::UTC,
            name => name
                .parse()
                .map_err(|_| RecurrenceError::UnknownZone(name.to_string()))?,
        };
        if let Some(start) = start_ms.filter(|s| *s <= 0) {
            return Err(RecurrenceError::BadStart(start));
        }
        if let (Some(start), Some(end)) = (start_ms, end_ms) {
            if end < start {
                return Err(RecurrenceError::EndBeforeStart { start, end });
            }
        }
        let rule = match rule {
            Rule::Times(mut times) => {
                if times.is_empty() {
                    return Err(RecurrenceError::NoTimes);
                }
                if times.len() > MAX_TIMES {
                    return Err(RecurrenceError::TooManyTimes(times.len()));
                }
                if let Some(bad) = times.iter().find(|t| **t <= 0) {
                    return Err(RecurrenceError::BadTime(*bad));
                }
                times.sort_unstable();
                times.dedup();
                Rule::Times(times)
            }
            other => other,
        };
        Ok(Recurrence {
            rule,
            zone,
            start_ms,
            end_ms,
        })
    }

    /// The first occurrence strictly after `after_ms`; None when there is none
    /// (the schedule ended, or a cron expression matches nothing in 5 years).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after = match self.start_ms {
            Some(start) => after_ms.max(start - 1),
            None => after_ms,
        };
        let next = match &self.rule {
            Rule::Every(e) => e.next_after(after),
            Rule::Times(times) => times.iter().copied().find(|t| *t > after),
            Rule::Cron(c) => self.cron_next(c, after),
        }?;
        match self.end_ms {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }

    /// The latest occurrence strictly after `after_ms` and at or before `at_ms`.
    pub fn latest_in(&self, after_ms: i64, at_ms: i64) -> Option<i64> {
        let at = match self.end_ms {
            Some(end) => at_ms.min(end),
            None => at_ms,
        };
        let latest = match &self.rule {
            Rule::Every(e) => e.at_or_before(at),
            Rule::Times(times) => times.iter().copied().rev().find(|t| *t <= at),
            // Widening windows back from `at`: dense rules stop in the first,
            // sparse ones have few occurrences in the wider ones.
            Rule::Cron(_) => {
                const WINDOWS: [i64; 6] = [
                    60_000,
                    3_600_000,
                    86_400_000,
                    31 * 86_400_000,
                    366 * 86_400_000,
                    5 * 366 * 86_400_000,
                ];
                WINDOWS.iter().find_map(|w| {
                    let mut last = None;
                    let mut t = at.saturating_sub(*w).max(after_ms);
                    while let Some(next) = self.next_after(t).filter(|n| *n <= at) {
                        last = Some(next);
                        t = next;
                    }
                    last
                })
            }
        }?;
        let in_bounds = latest > after_ms && self.start_ms.is_none_or(|s| latest >= s);
        in_bounds.then_some(latest)
    }

    /// Up to `limit` occurrences strictly after `after_ms` and at or before
    /// `until_ms`, ascending.
    pub fn between(&self, after_ms: i64, until_ms: i64, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut t = after_ms;
        while out.len() < limit {
            match self.next_after(t) {
                Some(next) if next <= until_ms => {
                    out.push(next);
                    t = next;
                }
                _ => break,
            }
        }
        out
    }

    fn cron_next(&self, cron: &Cron, after: i64) -> Option<i64> {
        // Cron occurrences are whole seconds.
        let first = after.div_euclid(1000) * 1000 + 1000;
        let utc = chrono::DateTime::<Utc>::from_timestamp_millis(first)?;
        let mut from: NaiveDateTime = utc.with_timezone(&self.zone).naive_local();
        let limit = from.checked_add_months(chrono::Months::new(12 * SEARCH_YEARS as u32))?;
        loop {
            let local = cron.next_local(from, limit)?;
            let instant = match self.zone.from_local_datetime(&local) {
                LocalResult::Single(t) => Some(t),
                // Occurs twice: only the first instant counts.
                LocalResult::Ambiguous(first, _) => Some(first),
                // Skipped by a DST change: no occurrence.
                LocalResult::None => None,
            };
            if let Some(ms) = instant.map(|t| t.timestamp_millis()) {
                if ms > after {
                    return Some(ms);
                }
            }
            from = local + chrono::Duration::seconds(1);
        }
    }
}
