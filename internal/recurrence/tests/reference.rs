//! Cron occurrences against a naive reference: walk forward minute by
//! minute in UTC, convert each instant to local time and check the fields.
//! UTC instants never land in a DST gap (so skipped local times are skipped
//! naturally); a local time that occurs twice is accepted only at its first
//! instant.

use chrono::{Datelike, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use chronos_recurrence::{parse_cron, Recurrence, Rule};
use proptest::prelude::*;

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];
const WINDOW_MINUTES: i64 = 3 * 24 * 60;

/// A field's allowed values, by brute force from its text (a second parser,
/// kept deliberately simple: numbers only).
fn allowed(text: &str, min: u32, max: u32) -> Vec<bool> {
    let mut ok = vec![false; max as usize + 1];
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().unwrap()),
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (a.parse().unwrap(), b.parse().unwrap())
        } else if item.contains('/') {
            (range.parse().unwrap(), max)
        } else {
            let v = range.parse().unwrap();
            (v, v)
        };
        let mut v = lo;
        while v <= hi {
            ok[v as usize] = true;
            v += step;
        }
    }
    ok
}

struct Naive {
    sec: Vec<bool>,
    min: Vec<bool>,
    hour: Vec<bool>,
    dom: Vec<bool>,
    month: Vec<bool>,
    dow: Vec<bool>,
    either_day: bool,
}

impl Naive {
    fn new(fields: &[String]) -> Naive {
        let six: Vec<&str> = if fields.len() == 5 {
            std::iter::once("0")
                .chain(fields.iter().map(String::as_str))
                .collect()
        } else {
            fields.iter().map(String::as_str).collect()
        };
        let mut dow = allowed(six[5], 0, 7);
        if dow[7] {
            dow[0] = true;
        }
        Naive {
            sec: allowed(six[0], 0, 59),
            min: allowed(six[1], 0, 59),
            hour: allowed(six[2], 0, 23),
            dom: allowed(six[3], 1, 31),
            month: allowed(six[4], 1, 12),
            dow,
            either_day: !six[3].starts_with('*') && !six[5].starts_with('*'),
        }
    }

    fn day_ok(&self, t: &NaiveDateTime) -> bool {
        let dom = self.dom[t.day() as usize];
        let dow = self.dow[t.weekday().num_days_from_sunday() as usize];
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    fn next_after(&self, zone: Tz, after: i64) -> Option<i64> {
        let first_minute = after.div_euclid(60_000) * 60_000;
        for m in 0..WINDOW_MINUTES {
            let minute = first_minute + m * 60_000;
            let local = Utc
                .timestamp_millis_opt(minute)
                .unwrap()
                .with_timezone(&zone)
                .naive_local();
            if !(self.month[local.month() as usize]
                && self.day_ok(&local)
                && self.hour[local.hour() as usize]
                && self.min[local.minute() as usize])
            {
                continue;
            }
            for s in 0..60 {
                let instant = minute + s * 1000;
                if !self.sec[s as usize] || instant <= after {
                    continue;
                }
                let here = local + chrono::Duration::seconds(s);
                if let LocalResult::Ambiguous(earliest, _) = zone.from_local_datetime(&here) {
                    if earliest.timestamp_millis() != instant {
                        continue;
                    }
                }
                return Some(instant);
            }
        }
        None
    }
}

fn field(min: u32, max: u32, star_weight: u32) -> impl Strategy<Value = String> {
    let span = max - min;
    prop_oneof![
        star_weight => Just("*".to_string()),
        2 => (min..=max).prop_map(|v| v.to_string()),
        2 => (min..=max, 0..=span).prop_map(move |(a, d)| format!("{a}-{}", (a + d).min(max))),
        2 => (1..=span.max(1)).prop_map(|n| format!("*/{n}")),
        1 => (min..=max, 1..=span.max(1)).prop_map(|(a, n)| format!("{a}/{n}")),
        2 => (min..=max, min..=max).prop_map(|(a, b)| format!("{a},{b}")),
    ]
}

fn expression() -> impl Strategy<Value = Vec<String>> {
    let seconds = prop_oneof![
        Just("0".to_string()),
        (0u32..60).prop_map(|v| v.to_string()),
        Just("*/15".to_string()),
        Just("10,40".to_string()),
    ];
    (
        seconds,
        field(0, 59, 3),
        field(0, 23, 3),
        field(1, 31, 6),
        field(1, 12, 12),
        field(0, 7, 6),
        any::<bool>(),
    )
        .prop_map(|(s, mi, h, dom, mo, dow, five)| {
            let mut f = vec![mi, h, dom, mo, dow];
            if !five {
                f.insert(0, s);
            }
            f
        })
}

/// Instants near this year's DST changes in the zones above, and anywhere.
fn instant() -> impl Strategy<Value = i64> {
    let near = [
        "2026-03-08T06:00:00Z",
        "2026-03-29T00:30:00Z",
        "2026-04-04T14:00:00Z",
        "2026-10-03T15:00:00Z",
        "2026-10-25T00:00:00Z",
        "2026-11-01T05:30:00Z",
    ]
    .map(|s| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    });
    prop_oneof![
        4 => (0usize..near.len(), -7_200_000i64..3_600_000).prop_map(move |(i, d)| near[i] + d),
        1 => 1_767_225_600_000i64..1_798_761_600_000,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn cron_matches_the_naive_walk(fields in expression(), zone in 0usize..ZONES.len(), after in instant()) {
        let expr = fields.join(" ");
        let zone_name = ZONES[zone];
        let tz: Tz = zone_name.parse().unwrap();
        let rec = Recurrence::new(Rule::Cron(parse_cron(&expr).unwrap()), zone_name, None, None).unwrap();
        let got = rec.next_after(after);
        let want = Naive::new(&fields).next_after(tz, after);
        match want {
            Some(w) => prop_assert_eq!(got, Some(w), "{} in {} after {}", expr, zone_name, after),
            None => {
                let beyond = after.div_euclid(60_000) * 60_000 + WINDOW_MINUTES * 60_000;
                prop_assert!(got.is_none_or(|g| g >= beyond), "{} in {}: {:?} inside the window", expr, zone_name, got);
            }
        }
    }

    #[test]
    fn parsing_never_panics(text in "\\PC{0,40}") {
        let _ = parse_cron(&text);
    }

    #[test]
    fn parsing_cron_like_noise_never_panics(text in "[0-9*/,?A-Za-z@ -]{0,30}") {
        let _ = parse_cron(&text);
    }
}
