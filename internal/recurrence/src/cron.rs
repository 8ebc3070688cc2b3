//! Cron expressions with seconds: parsing into per-field bit sets, and the
//! next matching local (wall-clock) time.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use crate::RecurrenceError;

/// A parsed cron expression: the allowed values of each field as bit sets
/// (bit `v` set when value `v` is allowed).
///
/// Build one with [`parse_cron`]; two expressions that allow the same times
/// compare equal (`0 0 * * 7` and `0 0 * * 0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    /// Sunday is bit 0 only (a 7 is folded into it).
    weekdays: u64,
    /// The day-of-month / day-of-week field starts with `*` or `?` (so
    /// `*/2` counts, as in Vixie cron): then the other field decides alone.
    /// When both are restricted, a day matches if either does.
    days_star: bool,
    weekdays_star: bool,
}

/// One field of the expression: its name in errors, range and value names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// Whether `?` may stand for `*` (the day fields only).
    question: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const fn field(name: &'static str, min: u32, max: u32) -> Field {
    Field {
        name,
        min,
        max,
        names: &[],
        question: false,
    }
}

const SECOND: Field = field("second", 0, 59);
const MINUTE: Field = field("minute", 0, 59);
const HOUR: Field = field("hour", 0, 23);
const DAY: Field = Field {
    question: true,
    ..field("day-of-month", 1, 31)
};
const MONTH: Field = Field {
    names: &MONTHS,
    ..field("month", 1, 12)
};
// 7 is Sunday too; folded into 0 after parsing.
const WEEKDAY: Field = Field {
    names: &WEEKDAYS,
    question: true,
    ..field("day-of-week", 0, 7)
};

/// Longest text quoted back in an error, so a huge input makes a short message.
const QUOTE_MAX: usize = 24;

fn bad(field: &'static str, detail: String) -> RecurrenceError {
    RecurrenceError::Cron { field, detail }
}

fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

impl Field {
    fn value(&self, text: &str) -> Result<u32, RecurrenceError> {
        let upper = text.to_ascii_uppercase();
        if let Some(i) = self.names.iter().position(|n| *n == upper) {
            // Month names start at 1 (the field's minimum), weekday names at 0.
            return Ok(i as u32 + self.min);
        }
        // Digits only: `str::parse` would also take a leading `+`.
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            let hint = match self.names.first() {
                Some(first) => format!(" or a name like {first}"),
                None => String::new(),
            };
            return Err(bad(
                self.name,
                format!("{} is not a number{hint}", quote(text)),
            ));
        }
        let range = format!("is out of range {}-{}", self.min, self.max);
        match text.parse::<u32>() {
            Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
            Ok(v) => Err(bad(self.name, format!("value {v} {range}"))),
            Err(_) => Err(bad(self.name, format!("value {} {range}", quote(text)))),
        }
    }

    /// Parses one field into a bit set; also whether it starts with `*`/`?`.
    fn parse(&self, text: &str) -> Result<(u64, bool), RecurrenceError> {
        let star = text.starts_with('*') || (self.question && text.starts_with('?'));
        let mut set = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                let detail = format!("has an empty list item in {}", quote(text));
                return Err(bad(self.name, detail));
            }
            set |= self.item(item)?;
        }
        Ok((set, star))
    }

    /// One list item: `*`, `v`, `a-b`, each optionally `/step`.
    fn item(&self, item: &str) -> Result<u64, RecurrenceError> {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(self.step(step)?)),
            None => (item, None),
        };
        let (lo, hi) = match range {
            "" => {
                let detail = format!("has no value before the step in {}", quote(item));
                return Err(bad(self.name, detail));
            }
            "*" => (self.min, self.max),
            "?" if self.question => (self.min, self.max),
            _ => match range.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (self.value(a)?, self.value(b)?);
                    if a > b {
                        return Err(bad(
                            self.name,
                            format!("range {} is reversed", quote(range)),
                        ));
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
        // `step_by` cannot overflow, however large the step.
        let step = step.unwrap_or(1) as usize;
        Ok((lo..=hi).step_by(step).fold(0, |set, v| set | (1 << v)))
    }

    fn step(&self, text: &str) -> Result<u32, RecurrenceError> {
        let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        match text.parse::<u32>() {
            Ok(0) => Err(bad(
                self.name,
                "step 0 is not allowed; use 1 or more".into(),
            )),
            Ok(step) if valid => Ok(step),
            _ => Err(bad(
                self.name,
                format!("step {} is not a positive number", quote(text)),
            )),
        }
    }
}

/// What a macro stands for, as six fields.
fn expand_macro(expr: &str) -> Result<&'static str, RecurrenceError> {
    Ok(match expr.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 0 1 1 *",
        "@monthly" => "0 0 0 1 * *",
        "@weekly" => "0 0 0 * * 0",
        "@daily" | "@midnight" => "0 0 0 * * *",
        "@hourly" => "0 0 * * * *",
        _ => {
            return Err(RecurrenceError::CronFormat(format!(
                "unknown macro {} (known: @yearly, @annually, @monthly, @weekly, \
                 @daily, @midnight, @hourly)",
                quote(expr)
            )))
        }
    })
}

/// Parses a cron expression: six fields (`second minute hour day-of-month
/// month day-of-week`), five (no seconds: second 0), or a macro (`@yearly`,
/// `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`).
///
/// Fields take `*`, numbers, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n`
/// (from a to the field's end), and lists `a,b-c`. Months and weekdays also
/// take names (`JAN`, `mon`); day-of-week runs 0-7 with 0 and 7 Sunday; `?`
/// means `*` in the two day fields.
///
/// ```
/// use chronos_recurrence::parse_cron;
/// assert_eq!(parse_cron("30 9 * * MON-FRI"), parse_cron("0 30 9 ? * 1-5"));
/// let err = parse_cron("0 0 25 * * *").unwrap_err();
/// assert_eq!(err.to_string(), "cron: field 'hour' value 25 is out of range 0-23");
/// ```
pub fn parse_cron(expr: &str) -> Result<Cron, RecurrenceError> {
    let expr = expr.trim();
    let expanded = if expr.starts_with('@') {
        expand_macro(expr)?
    } else {
        expr
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let fields: [&str; 6] = match fields[..] {
        [s, mi, h, d, mo, w] => [s, mi, h, d, mo, w],
        [mi, h, d, mo, w] => ["0", mi, h, d, mo, w],
        _ => {
            return Err(RecurrenceError::CronFormat(format!(
                "has {} fields; expected 6 (second minute hour day-of-month month \
                 day-of-week) or 5 (without the second)",
                fields.len()
            )))
        }
    };
    let (seconds, _) = SECOND.parse(fields[0])?;
    let (minutes, _) = MINUTE.parse(fields[1])?;
    let (hours, _) = HOUR.parse(fields[2])?;
    let (days, days_star) = DAY.parse(fields[3])?;
    let (months, _) = MONTH.parse(fields[4])?;
    let (weekdays, weekdays_star) = WEEKDAY.parse(fields[5])?;
    let sunday = u64::from(weekdays & (1 << 7) != 0);
    Ok(Cron {
        seconds,
        minutes,
        hours,
        days,
        months,
        weekdays: (weekdays & !(1 << 7)) | sunday,
        days_star,
        weekdays_star,
    })
}

/// The smallest value in `set` at or above `from`.
fn next_in(set: u64, from: u32) -> Option<u32> {
    let rest = set.checked_shr(from)?;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

fn midnight(date: NaiveDate) -> NaiveDateTime {
    date.and_time(NaiveTime::MIN)
}

impl Cron {
    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first of the next allowed month after `date`'s month.
    fn next_month(&self, date: NaiveDate) -> Option<NaiveDateTime> {
        let (year, month) = match next_in(self.months, date.month() + 1) {
            Some(m) => (date.year(), m),
            None => (date.year() + 1, self.months.trailing_zeros()),
        };
        NaiveDate::from_ymd_opt(year, month, 1).map(midnight)
    }

    /// The first local (wall-clock) time at or after `from` whose fields
    /// match, not later than `limit`.
    ///
    /// The usual cron walk: a field that does not match moves to its next
    /// allowed value (resetting the smaller fields), or carries into the
    /// next larger unit. Each step moves forward, and there are at most a
    /// few per day, plus one per day for day rules that rarely match.
    pub(crate) fn next_local(
        &self,
        from: NaiveDateTime,
        limit: NaiveDateTime,
    ) -> Option<NaiveDateTime> {
        let mut t = from;
        while t <= limit {
            let date = t.date();
            if self.months & (1 << date.month()) == 0 {
                t = self.next_month(date)?;
                continue;
            }
            if !self.day_matches(date) {
                t = midnight(date.succ_opt()?);
                continue;
            }
            let Some(hour) = next_in(self.hours, t.hour()) else {
                t = midnight(date.succ_opt()?);
                continue;
            };
            if hour != t.hour() {
                t = date.and_hms_opt(hour, 0, 0)?;
            }
            let Some(minute) = next_in(self.minutes, t.minute()) else {
                t = date.and_hms_opt(hour, 0, 0)? + Duration::hours(1);
                continue;
            };
            if minute != t.minute() {
                t = date.and_hms_opt(hour, minute, 0)?;
            }
            let Some(second) = next_in(self.seconds, t.second()) else {
                t = date.and_hms_opt(hour, minute, 0)? + Duration::minutes(1);
                continue;
            };
            let found = date.and_hms_opt(hour, minute, second)?;
            return (found <= limit).then_some(found);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn next(expr: &str, from: &str) -> Option<NaiveDateTime> {
        let from = at(from);
        let limit = from + Duration::days(5 * 366);
        parse_cron(expr).unwrap().next_local(from, limit)
    }

    #[test]
    fn walks_each_field_to_its_next_value() {
        let cases = [
            ("* * * * * *", "2026-01-01 00:00:00", "2026-01-01 00:00:00"),
            (
                "*/15 * * * * *",
                "2026-01-01 00:00:01",
                "2026-01-01 00:00:15",
            ),
            ("10 * * * * *", "2026-01-01 00:00:11", "2026-01-01 00:01:10"),
            ("0 5 * * * *", "2026-01-01 23:06:00", "2026-01-02 00:05:00"),
            ("0 0 12 * * *", "2026-01-01 13:00:00", "2026-01-02 12:00:00"),
            ("0 0 0 31 * *", "2026-02-01 00:00:00", "2026-03-31 00:00:00"),
            (
                "0 0 0 1 JAN *",
                "2026-12-31 23:59:59",
                "2027-01-01 00:00:00",
            ),
            ("0 0 0 29 2 *", "2026-03-01 00:00:00", "2028-02-29 00:00:00"),
            (
                "0 0 0 * * SAT",
                "2026-01-01 00:00:00",
                "2026-01-03 00:00:00",
            ),
        ];
        for (expr, from, want) in cases {
            assert_eq!(next(expr, from), Some(at(want)), "{expr} from {from}");
        }
    }

    #[test]
    fn stops_at_the_limit() {
        assert_eq!(next("0 0 0 30 2 *", "2026-01-01 00:00:00"), None);
        let from = at("2026-01-01 00:00:00");
        let cron = parse_cron("0 0 0 2 * *").unwrap();
        assert_eq!(cron.next_local(from, from + Duration::hours(23)), None);
    }

    #[test]
    fn huge_steps_and_numbers_are_errors_or_single_values() {
        assert_eq!(
            parse_cron("0/4294967295 * * * * *"),
            parse_cron("0 * * * * *")
        );
        assert!(parse_cron("0/4294967296 * * * * *").is_err());
        assert!(parse_cron("99999999999999999999 * * * * *").is_err());
        assert!(parse_cron("+5 * * * * *").is_err());
        assert!(parse_cron("*/+5 * * * * *").is_err());
    }
}
