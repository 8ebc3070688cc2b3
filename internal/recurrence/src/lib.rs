//! When a recurring schedule's occurrences are.
//!
//! A [`Recurrence`] is a [`Rule`] — a cron expression with seconds
//! ([`Cron`], from [`parse_cron`]), a fixed interval from an anchor
//! ([`Every`], from [`every`]) or a list of instants — in an IANA time zone,
//! optionally bounded by a start and an end (both inclusive). Times are unix
//! milliseconds. Occurrences are computed from the rule, never by adding to
//! a previous fire time, so a late fire does not move the next one.
//!
//! **Cron** expressions are matched against the wall-clock time of the zone,
//! at whole seconds. When both day-of-month and day-of-week are restricted
//! (neither starts with `*` or `?`), a day matches if either does; otherwise
//! both must (the Vixie cron rule; like Vixie cron, `*/2` counts as `*`).
//!
//! **Daylight saving time** (cron only; intervals and lists are absolute
//! instants, untouched by the zone):
//! - a local time that does not exist (the clock jumps forward over it) has
//!   no occurrence: `0 30 2 * * *` in Europe/Berlin does not fire on the
//!   spring-forward day;
//! - a local time that occurs twice (the clock falls back) fires once, at
//!   the first (earlier) instant: the same expression fires once on the
//!   fall-back day, and an hourly expression fires once for the repeated
//!   hour.
//!
//! **Search bound.** The next cron occurrence is looked for up to five years
//! (of local time) after the time asked about, so every call ends quickly;
//! an expression whose next match is further away has no next occurrence
//! (None, as for a finished schedule). That covers expressions that never
//! match (`0 0 0 30 2 *`, February 30th) and rare ones (a February 29th
//! across 2100, which is not a leap year).
//!
//! Pure computation: no clocks, storage or events.
//!
//! ```
//! use chronos_recurrence::{parse_cron, Recurrence, Rule};
//! let rule = Rule::Cron(parse_cron("0 30 9 * * MON-FRI").unwrap());
//! let rec = Recurrence::new(rule, "Europe/Berlin", None, None).unwrap();
//! // Friday 2026-01-02 10:00 UTC (11:00 in Berlin): next is Monday 09:30 CET.
//! assert_eq!(rec.next_after(1_767_348_000_000), Some(1_767_601_800_000));
//! ```

#![warn(missing_docs)]

mod cron;

use chrono::{DateTime, Duration, Months, NaiveDateTime, TimeZone};
use chrono_tz::Tz;

pub use cron::{parse_cron, Cron};

/// Shortest interval of an [`Every`] rule.
pub const MIN_EVERY_MS: i64 = 1_000;
/// Most instants in a [`Rule::Times`] list.
pub const MAX_TIMES: usize = 1_000;
/// How far ahead a cron search looks, in years of local time.
const SEARCH_YEARS: u32 = 5;

/// Why a rule is refused. [`field()`](RecurrenceError::field) names the
/// schedule field at fault; the message names it too, and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    /// A cron field (`field`: "second", "minute", "hour", "day-of-month",
    /// "month" or "day-of-week") is malformed or out of range.
    #[error("cron: field '{field}' {detail}")]
    Cron {
        /// The cron field at fault.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The expression as a whole: wrong field count or unknown macro.
    #[error("cron: {0}")]
    CronFormat(String),
    /// The interval is below [`MIN_EVERY_MS`] (or not positive).
    #[error("every: an interval of {0} ms is too short; it must be at least {MIN_EVERY_MS} ms")]
    EveryTooShort(i64),
    /// A list of times without any.
    #[error("times: the list is empty; give at least one instant")]
    NoTimes,
    /// A list of more than [`MAX_TIMES`] times.
    #[error("times: the list has {0} instants; at most {MAX_TIMES} are allowed")]
    TooManyTimes(usize),
    /// An instant at or before the unix epoch.
    #[error("times: instant {0} is not a positive time in ms since the unix epoch")]
    BadTime(i64),
    /// Two instants of a list closer than [`MIN_EVERY_MS`].
    #[error("times: instants {first} and {next} are {} ms apart; they must be at least {MIN_EVERY_MS} ms apart", next - first)]
    TimesTooClose {
        /// The earlier instant.
        first: i64,
        /// The one after it.
        next: i64,
    },
    /// Not an IANA zone name.
    #[error("time_zone: unknown zone {0:?}; use an IANA name such as \"Europe/Berlin\"")]
    UnknownZone(String),
    /// The end is before the start.
    #[error("end: {end} is before the start {start}")]
    EndBeforeStart {
        /// The schedule's start.
        start: i64,
        /// The schedule's end.
        end: i64,
    },
    /// A start at or before the unix epoch.
    #[error("start: {0} is not a positive time in ms since the unix epoch")]
    BadStart(i64),
}

impl RecurrenceError {
    /// The schedule field the error is about: "cron", "every", "times",
    /// "time_zone", "start" or "end".
    pub fn field(&self) -> &'static str {
        match self {
            RecurrenceError::Cron { .. } | RecurrenceError::CronFormat(_) => "cron",
            RecurrenceError::EveryTooShort(_) => "every",
            RecurrenceError::NoTimes
            | RecurrenceError::TooManyTimes(_)
            | RecurrenceError::BadTime(_)
            | RecurrenceError::TimesTooClose { .. } => "times",
            RecurrenceError::UnknownZone(_) => "time_zone",
            RecurrenceError::EndBeforeStart { .. } => "end",
            RecurrenceError::BadStart(_) => "start",
        }
    }
}

/// Occurrences at `anchor + k * period` for k >= 0, in absolute time.
///
/// Build one with [`every`]. The anchor is normally the schedule's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Every {
    period_ms: i64,
    anchor_ms: i64,
}

/// An interval rule: every `period_ms` (at least [`MIN_EVERY_MS`]) from
/// `anchor_ms`, the first occurrence.
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
    /// The first occurrence strictly after `after`, if representable.
    fn next_after(&self, after: i64) -> Option<i64> {
        if after < self.anchor_ms {
            return Some(self.anchor_ms);
        }
        // i128: `after - anchor` overflows i64 for far-apart values.
        let (anchor, period) = (i128::from(self.anchor_ms), i128::from(self.period_ms));
        let k = (i128::from(after) - anchor) / period + 1;
        i64::try_from(anchor + k * period).ok()
    }

    /// The latest occurrence at or before `at`, if any.
    fn at_or_before(&self, at: i64) -> Option<i64> {
        if at < self.anchor_ms {
            return None;
        }
        let (anchor, period) = (i128::from(self.anchor_ms), i128::from(self.period_ms));
        let k = (i128::from(at) - anchor) / period;
        i64::try_from(anchor + k * period).ok()
    }
}

/// How a schedule recurs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// At the times a cron expression matches, in the schedule's zone.
    Cron(Cron),
    /// At a fixed interval from an anchor.
    Every(Every),
    /// At these instants (unix ms; sorted and deduplicated by
    /// [`Recurrence::new`], which refuses an empty list or one longer than
    /// [`MAX_TIMES`]).
    Times(Vec<i64>),
}

/// A rule in a time zone, between an optional start and end (inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurrence {
    rule: Rule,
    zone: Tz,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
}

impl Recurrence {
    /// Checks and builds a recurrence. `zone` is an IANA name (the empty
    /// string means UTC); only cron rules depend on it.
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
            Rule::Times(times) => Rule::Times(checked_times(times)?),
            other => other,
        };
        Ok(Recurrence {
            rule,
            zone,
            start_ms,
            end_ms,
        })
    }

    /// The first occurrence strictly after `after_ms`, honouring the start
    /// and end; None when there is none (the schedule ended, or a cron
    /// expression matches nothing within five years).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        // Nothing before the start; start > 0, so `start - 1` cannot overflow.
        let after = match self.start_ms {
            Some(start) => after_ms.max(start - 1),
            None => after_ms,
        };
        let next = match &self.rule {
            Rule::Every(every) => every.next_after(after),
            Rule::Times(times) => times.get(times.partition_point(|t| *t <= after)).copied(),
            Rule::Cron(cron) => self.cron_next(cron, after),
        }?;
        self.end_ms.is_none_or(|end| next <= end).then_some(next)
    }

    /// The latest occurrence at or before `at_ms` and strictly after
    /// `after_ms` (for the "fire once" missed-run policy); None if none.
    pub fn latest_in(&self, after_ms: i64, at_ms: i64) -> Option<i64> {
        let at = match self.end_ms {
            Some(end) => at_ms.min(end),
            None => at_ms,
        };
        let latest = match &self.rule {
            Rule::Every(every) => every.at_or_before(at),
            Rule::Times(times) => times
                .partition_point(|t| *t <= at)
                .checked_sub(1)
                .and_then(|i| times.get(i))
                .copied(),
            Rule::Cron(_) => self.cron_latest(after_ms, at),
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

    /// The next cron occurrence after `after`, not bounded by start or end.
    fn cron_next(&self, cron: &Cron, after: i64) -> Option<i64> {
        // Cron occurrences are whole seconds: the first candidate is the
        // next whole second (None for instants chrono cannot represent).
        let first = after.div_euclid(1000).checked_add(1)?.checked_mul(1000)?;
        let mut from = DateTime::from_timestamp_millis(first)?
            .with_timezone(&self.zone)
            .naive_local();
        let limit = from.checked_add_months(Months::new(12 * SEARCH_YEARS))?;
        loop {
            let local = cron.next_local(from, limit)?;
            // A local time already passed (`after` is in the second pass of
            // a repeated hour) or skipped by DST is not an occurrence.
            if let Some(ms) = self.first_instant(local).filter(|ms| *ms > after) {
                return Some(ms);
            }
            from = local.checked_add_signed(Duration::seconds(1))?;
        }
    }

    /// When a local time fires: at the first of two instants in a fall-back,
    /// never in a spring-forward gap.
    fn first_instant(&self, local: NaiveDateTime) -> Option<i64> {
        let instant = self.zone.from_local_datetime(&local).earliest()?;
        Some(instant.timestamp_millis())
    }

    /// The latest cron occurrence in (`after`, `at`], within the bounds.
    ///
    /// Walks forward through widening windows back from `at`: a dense rule
    /// stops in the first, a sparse one has few occurrences in the wider ones.
    fn cron_latest(&self, after: i64, at: i64) -> Option<i64> {
        const DAY_MS: i64 = 86_400_000;
        const WINDOWS_MS: [i64; 6] = [
            60_000,
            3_600_000,
            DAY_MS,
            31 * DAY_MS,
            366 * DAY_MS,
            SEARCH_YEARS as i64 * 366 * DAY_MS,
        ];
        WINDOWS_MS.iter().find_map(|window| {
            let from = at.saturating_sub(*window).max(after);
            let first = self.next_after(from).filter(|t| *t <= at);
            std::iter::successors(first, |t| self.next_after(*t).filter(|n| *n <= at)).last()
        })
    }
}

/// Refuses a list of times with two instants closer than [`MIN_EVERY_MS`],
/// as an interval that short is refused. Checked when a schedule is created
/// or updated, not when a stored one is read (one stored before the rule
/// keeps firing).
pub fn check_spacing(times: &[i64]) -> Result<(), RecurrenceError> {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    match sorted.windows(2).find(|w| w[1] - w[0] < MIN_EVERY_MS) {
        Some(w) => Err(RecurrenceError::TimesTooClose {
            first: w[0],
            next: w[1],
        }),
        None => Ok(()),
    }
}

/// A list of times sorted and deduplicated, or why it is refused.
fn checked_times(mut times: Vec<i64>) -> Result<Vec<i64>, RecurrenceError> {
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
    Ok(times)
}
