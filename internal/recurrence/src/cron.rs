//! Cron expressions with seconds: parsing into per-field sets, and the next
//! matching local time.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use crate::RecurrenceError;

/// A parsed cron expression: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// The day-of-month / day-of-week field was `*` or `?` (or started with
    /// `*`): then the other decides alone. When both are restricted, a day
    /// matches if either does (the Vixie cron rule).
    days_star: bool,
    weekdays_star: bool,
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTHS,
};
// 7 is Sunday too; folded into 0 after parsing.
const WEEKDAY: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &WEEKDAYS,
};

fn bad(field: &'static str, detail: String) -> RecurrenceError {
    RecurrenceError::Cron { field, detail }
}

impl Field {
    fn value(&self, text: &str) -> Result<u32, RecurrenceError> {
        let upper = text.to_ascii_uppercase();
        if let Some(i) = self.names.iter().position(|n| *n == upper) {
            // Month names start at 1 (the field's minimum), weekday names at 0.
            return Ok(i as u32 + self.min);
        }
        let v: u32 = text.parse().map_err(|_| {
            bad(
                self.name,
                format!("{text:?} is not a number{}", self.name_hint()),
            )
        })?;
        if v < self.min || v > self.max {
            return Err(bad(
                self.name,
                format!("value {v} is out of range {}-{}", self.min, self.max),
            ));
        }
        Ok(v)
    }

    fn name_hint(&self) -> String {
        match self.names.first() {
            Some(first) => format!(" or a name like {first}"),
            None => String::new(),
        }
    }

    /// Parses one field into a bit set; also whether it starts with `*`/`?`.
    fn parse(&self, text: &str) -> Result<(u64, bool), RecurrenceError> {
        if text.is_empty() {
            return Err(bad(self.name, "is empty".into()));
        }
        let star = text.starts_with('*') || text.starts_with('?');
        let mut set = 0u64;
        for item in text.split(',') {
            set |= self.item(item)?;
        }
        Ok((set, star))
    }

    fn item(&self, item: &str) -> Result<u64, RecurrenceError> {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| bad(self.name, format!("step {s:?} is not a positive number")))?;
                if step == 0 {
                    return Err(bad(self.name, "step must be at least 1".into()));
                }
                (r, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = match range {
            "" => return Err(bad(self.name, format!("empty item in {item:?}"))),
            "*" => (self.min, self.max),
            "?" if self.name == DAY.name || self.name == WEEKDAY.name => (self.min, self.max),
            _ => match range.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (self.value(a)?, self.value(b)?);
                    if a > b {
                        return Err(bad(self.name, format!("range {range:?} is reversed")));
                    }
                    (a, b)
                }
                // `a/n` runs from a to the end of the field.
                None if step.is_some() => (self.value(range)?, self.max),
                None => {
                    let v = self.value(range)?;
                    (v, v)
                }
            },
        };
        let mut set = 0u64;
        let mut v = lo;
        while v <= hi {
            set |= 1 << v;
            v += step.unwrap_or(1);
        }
        Ok(set)
    }
}

/// Parses a cron expression: six fields (`sec min hour dom month dow`), five
/// (seconds 0), or a macro (`@yearly`, `@annually`, `@monthly`, `@weekly`,
/// `@daily`, `@midnight`, `@hourly`).
pub fn parse_cron(expr: &str) -> Result<Cron, RecurrenceError> {
    let expr = expr.trim();
    let expanded = match expr.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 0 1 1 *",
        "@monthly" => "0 0 0 1 * *",
        "@weekly" => "0 0 0 * * 0",
        "@daily" | "@midnight" => "0 0 0 * * *",
        "@hourly" => "0 0 * * * *",
        m if m.starts_with('@') => {
            return Err(RecurrenceError::CronFormat(format!(
                "unknown macro {expr:?} (known: @yearly, @annually, @monthly, @weekly, \
                 @daily, @midnight, @hourly)"
            )))
        }
        _ => expr,
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let fields: Vec<&str> = match fields.len() {
        6 => fields,
        5 => std::iter::once("0").chain(fields).collect(),
        n => {
            return Err(RecurrenceError::CronFormat(format!(
                "has {n} fields; expected 6 (second minute hour day-of-month month \
                 day-of-week) or 5 (without seconds)"
            )))
        }
    };
    let (seconds, _) = SECOND.parse(fields[0])?;
    let (minutes, _) = MINUTE.parse(fields[1])?;
    let (hours, _) = HOUR.parse(fields[2])?;
    let (days, days_star) = DAY.parse(fields[3])?;
    let (months, _) = MONTH.parse(fields[4])?;
    let (mut weekdays, weekdays_star) = WEEKDAY.parse(fields[5])?;
    if weekdays & (1 << 7) != 0 {
        weekdays = (weekdays & !(1 << 7)) | 1;
    }
    Ok(Cron {
        seconds,
        minutes,
        hours,
        days,
        months,
        weekdays,
        days_star,
        weekdays_star,
    })
}

fn has(set: u64, v: u32) -> bool {
    set & (1 << v) != 0
}

impl Cron {
    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = has(self.days, date.day());
        let dow = has(self.weekdays, date.weekday().num_days_from_sunday());
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first local (wall-clock) time at or after `from` whose fields
    /// match, not later than `limit`.
    pub(crate) fn next_local(
        &self,
        from: NaiveDateTime,
        limit: NaiveDateTime,
    ) -> Option<NaiveDateTime> {
        let mut t = from;
        while t <= limit {
            let date = t.date();
            if !has(self.months, date.month()) {
                let (y, m) = match date.month() {
                    12 => (date.year() + 1, 1),
                    m => (date.year(), m + 1),
                };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_time(NaiveTime::MIN);
                continue;
            }
            if !self.day_matches(date) {
                t = date.succ_opt()?.and_time(NaiveTime::MIN);
                continue;
            }
            if !has(self.hours, t.hour()) {
                t = date.and_hms_opt(t.hour(), 0, 0)? + Duration::hours(1);
                continue;
            }
            if !has(self.minutes, t.minute()) {
                t = date.and_hms_opt(t.hour(), t.minute(), 0)? + Duration::minutes(1);
                continue;
            }
            // The next allowed second in this minute, if any.
            let rest = self.seconds >> t.second();
            if rest == 0 {
                t = date.and_hms_opt(t.hour(), t.minute(), 0)? + Duration::minutes(1);
                continue;
            }
            let second = t.second() + rest.trailing_zeros();
            return date.and_hms_opt(t.hour(), t.minute(), second);
        }
        None
    }
}
