//! Cron occurrences against a naive reference evaluator.
//!
//! Expressions are generated as structured field specs (stars, values,
//! ranges, steps, lists, names, `?`), rendered to text for the crate, and
//! expanded by brute force into allowed-value tables for the reference. The
//! reference walks forward minute by minute in UTC over a bounded window,
//! converts each instant to local time with chrono-tz and checks the fields,
//! then the seconds of a matching minute one by one. UTC instants never land
//! in a DST gap, so skipped local times are skipped naturally; an instant is
//! rejected when the same local time was already shown at an earlier
//! instant (the second pass of a repeated hour). That check only converts
//! UTC to local, so it does not share the crate's local-to-UTC conversion.

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike};
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
/// Fall-back sizes the reference knows (Lord Howe: 30 min; most zones: 1 h).
const FALL_BACKS_MS: [i64; 3] = [1_800_000, 3_600_000, 7_200_000];

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["sun", "Mon", "TUE", "wed", "Thu", "FRI", "sat"];

/// One item of a field's list.
#[derive(Debug, Clone)]
enum Item {
    Star,
    Question,
    StarStep(u32),
    Value(u32),
    Range(u32, u32),
    RangeStep(u32, u32, u32),
    FromStep(u32, u32),
}

/// The bounds of a cron field and how its values may be written.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
    question: bool,
}

const SECOND: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
    question: false,
};
const MINUTE: Bounds = SECOND;
const HOUR: Bounds = Bounds { max: 23, ..SECOND };
const DAY: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
    question: true,
};
const MONTH: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &MONTHS,
    question: false,
};
const WEEKDAY: Bounds = Bounds {
    min: 0,
    max: 7,
    names: &WEEKDAYS,
    question: true,
};

/// A generated field: its items, and per value whether it is written by name.
#[derive(Debug, Clone)]
struct FieldSpec {
    bounds: Bounds,
    items: Vec<Item>,
    by_name: bool,
}

impl FieldSpec {
    fn value(&self, v: u32) -> String {
        let name = v
            .checked_sub(self.bounds.min)
            .and_then(|i| self.bounds.names.get(i as usize));
        match name {
            Some(name) if self.by_name => name.to_string(),
            _ => v.to_string(),
        }
    }

    fn text(&self) -> String {
        let items: Vec<String> = self
            .items
            .iter()
            .map(|item| match *item {
                Item::Star => "*".into(),
                Item::Question => "?".into(),
                Item::StarStep(n) => format!("*/{n}"),
                Item::Value(v) => self.value(v),
                Item::Range(a, b) => format!("{}-{}", self.value(a), self.value(b)),
                Item::RangeStep(a, b, n) => format!("{}-{}/{n}", self.value(a), self.value(b)),
                Item::FromStep(a, n) => format!("{}/{n}", self.value(a)),
            })
            .collect();
        items.join(",")
    }

    /// Allowed values, indexed by value.
    fn allowed(&self) -> Vec<bool> {
        let Bounds { min, max, .. } = self.bounds;
        let mut ok = vec![false; max as usize + 1];
        for item in &self.items {
            let (lo, hi, step) = match *item {
                Item::Star | Item::Question => (min, max, 1),
                Item::StarStep(n) => (min, max, n),
                Item::Value(v) => (v, v, 1),
                Item::Range(a, b) => (a, b, 1),
                Item::RangeStep(a, b, n) => (a, b, n),
                Item::FromStep(a, n) => (a, max, n),
            };
            let mut v = lo;
            while v <= hi {
                ok[v as usize] = true;
                v += step;
            }
        }
        ok
    }

    /// Vixie cron: a day field is "unrestricted" when it starts with `*`/`?`.
    fn starred(&self) -> bool {
        matches!(
            self.items.first(),
            Some(Item::Star | Item::Question | Item::StarStep(_))
        )
    }
}

/// An item with values in `min..=max` (within the field's bounds).
fn item(b: Bounds) -> BoxedStrategy<Item> {
    item_in(b, b.min, b.max)
}

fn item_in(b: Bounds, min: u32, max: u32) -> BoxedStrategy<Item> {
    let pair = (min..=max, min..=max).prop_map(|(a, c)| (a.min(c), a.max(c)));
    let step = 1..=(b.max - b.min + 2);
    prop_oneof![
        3 => (min..=max).prop_map(Item::Value),
        2 => pair.clone().prop_map(|(a, c)| Item::Range(a, c)),
        1 => step.clone().prop_map(Item::StarStep),
        1 => (pair, step.clone()).prop_map(|((a, c), n)| Item::RangeStep(a, c, n)),
        1 => (min..=max, step).prop_map(|(a, n)| Item::FromStep(a, n)),
    ]
    .boxed()
}

/// A field: mostly a lone star (`star_weight`), else a list of 1-3 items.
fn field_spec(b: Bounds, star_weight: u32) -> impl Strategy<Value = FieldSpec> {
    let star = if b.question {
        prop_oneof![Just(vec![Item::Star]), Just(vec![Item::Question])].boxed()
    } else {
        Just(vec![Item::Star]).boxed()
    };
    let items = prop_oneof![
        star_weight => star,
        4 => prop::collection::vec(item(b), 1..=3),
    ];
    (items, any::<bool>()).prop_map(move |(items, by_name)| FieldSpec {
        bounds: b,
        items,
        by_name,
    })
}

/// Six field specs; `five` drops the seconds from the text (then they are 0).
#[derive(Debug, Clone)]
struct Expr {
    fields: [FieldSpec; 6],
    five: bool,
}

impl Expr {
    fn text(&self) -> String {
        let skip = usize::from(self.five);
        let texts: Vec<String> = self.fields[skip..].iter().map(FieldSpec::text).collect();
        texts.join(" ")
    }
}

fn expression() -> impl Strategy<Value = Expr> {
    let seconds = prop_oneof![
        3 => Just(FieldSpec { bounds: SECOND, items: vec![Item::Value(0)], by_name: false }),
        2 => field_spec(SECOND, 1),
    ];
    (
        seconds,
        field_spec(MINUTE, 2),
        field_spec(HOUR, 3),
        field_spec(DAY, 6),
        field_spec(MONTH, 10),
        field_spec(WEEKDAY, 6),
        any::<bool>(),
    )
        .prop_map(|(mut s, mi, h, d, mo, w, five)| {
            if five {
                s.items = vec![Item::Value(0)];
            }
            Expr {
                fields: [s, mi, h, d, mo, w],
                five,
            }
        })
}

/// Expressions that fire around 02:00 local, where the DST changes of the
/// zones here are: hours 0-4, any day.
fn dst_expression() -> impl Strategy<Value = Expr> {
    let hours = prop::collection::vec(item_in(HOUR, 0, 4), 1..=2).prop_map(|items| FieldSpec {
        bounds: HOUR,
        items,
        by_name: false,
    });
    (expression(), hours).prop_map(|(mut expr, hours)| {
        expr.fields[2] = hours;
        for i in 3..6 {
            expr.fields[i].items = vec![Item::Star];
        }
        expr
    })
}

/// The expression as allowed-value tables.
struct Naive {
    sec: Vec<bool>,
    min: Vec<bool>,
    hour: Vec<bool>,
    dom: Vec<bool>,
    month: Vec<bool>,
    dow: Vec<bool>,
    either_day: bool,
}

fn local(zone: Tz, ms: i64) -> NaiveDateTime {
    DateTime::from_timestamp_millis(ms)
        .unwrap()
        .with_timezone(&zone)
        .naive_local()
}

impl Naive {
    fn new(expr: &Expr) -> Naive {
        let [s, mi, h, d, mo, w] = &expr.fields;
        Naive {
            sec: s.allowed(),
            min: mi.allowed(),
            hour: h.allowed(),
            dom: d.allowed(),
            month: mo.allowed(),
            dow: w.allowed(),
            either_day: !d.starred() && !w.starred(),
        }
    }

    fn day_ok(&self, t: &NaiveDateTime) -> bool {
        let dom = self.dom[t.day() as usize];
        let weekday = t.weekday().num_days_from_sunday() as usize;
        let dow = self.dow[weekday] || (weekday == 0 && self.dow[7]);
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    fn minute_ok(&self, t: &NaiveDateTime) -> bool {
        self.month[t.month() as usize]
            && self.day_ok(t)
            && self.hour[t.hour() as usize]
            && self.min[t.minute() as usize]
    }

    /// The first match after `after` within the window, if any.
    fn next_after(&self, zone: Tz, after: i64) -> Option<i64> {
        let first_minute = after.div_euclid(60_000) * 60_000;
        for m in 0..WINDOW_MINUTES {
            let minute = first_minute + m * 60_000;
            let wall = local(zone, minute);
            if !self.minute_ok(&wall) {
                continue;
            }
            for s in 0..60 {
                let instant = minute + s * 1000;
                if self.sec[s as usize] && instant > after && !shown_before(zone, instant) {
                    return Some(instant);
                }
            }
        }
        None
    }
}

/// Whether the wall-clock time at `instant` was already shown earlier.
fn shown_before(zone: Tz, instant: i64) -> bool {
    let wall = local(zone, instant);
    FALL_BACKS_MS
        .iter()
        .any(|d| local(zone, instant - d) == wall)
}

/// 2026's DST changes in the zones above.
fn transitions() -> [i64; 6] {
    [
        "2026-03-08T07:00:00Z", // New York springs forward
        "2026-03-29T01:00:00Z", // Berlin springs forward
        "2026-04-04T15:00:00Z", // Lord Howe falls back 30 min
        "2026-10-03T15:30:00Z", // Lord Howe springs forward 30 min
        "2026-10-25T01:00:00Z", // Berlin falls back
        "2026-11-01T06:00:00Z", // New York falls back
    ]
    .map(|s| DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis())
}

/// Instants near 2026's DST changes, and anywhere in 2026.
fn instant() -> impl Strategy<Value = i64> {
    let near = transitions();
    prop_oneof![
        2 => (0..near.len(), -10_800_000i64..10_800_000).prop_map(move |(i, d)| near[i] + d),
        1 => 1_767_225_600_000i64..1_798_761_600_000,
    ]
}

fn recurrence(text: &str, zone: &str) -> Recurrence {
    let cron = parse_cron(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    Recurrence::new(Rule::Cron(cron), zone, None, None).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn cron_matches_the_naive_walk(expr in expression(), zone in 0..ZONES.len(), after in instant()) {
        let text = expr.text();
        let tz: Tz = ZONES[zone].parse().unwrap();
        let got = recurrence(&text, ZONES[zone]).next_after(after);
        match Naive::new(&expr).next_after(tz, after) {
            Some(want) => prop_assert_eq!(got, Some(want), "{:?} in {} after {}", text, ZONES[zone], after),
            None => {
                let beyond = after.div_euclid(60_000) * 60_000 + WINDOW_MINUTES * 60_000;
                prop_assert!(
                    got.is_none_or(|g| g >= beyond),
                    "{:?} in {} after {}: {:?} inside the window", text, ZONES[zone], after, got
                );
            }
        }
    }

    #[test]
    fn cron_around_dst_matches_the_naive_walk(
        expr in dst_expression(),
        zone in 1..4usize,
        change in 0..6usize,
        before in 0i64..5 * 3_600_000,
    ) {
        let text = expr.text();
        let tz: Tz = ZONES[zone].parse().unwrap();
        let after = transitions()[change] - before;
        let got = recurrence(&text, ZONES[zone]).next_after(after);
        let want = Naive::new(&expr).next_after(tz, after);
        prop_assert!(want.is_some(), "{:?}: hours 0-4 match every day", text);
        prop_assert_eq!(got, want, "{:?} in {} after {}", text, ZONES[zone], after);
    }

    #[test]
    fn latest_in_is_the_last_of_between(
        expr in expression(),
        zone in 0..ZONES.len(),
        after in instant(),
        span in prop_oneof![0i64..7_200_000, 0i64..40 * 86_400_000],
    ) {
        let rec = recurrence(&expr.text(), ZONES[zone]);
        let all = rec.between(after, after + span, 5_000);
        prop_assume!(all.len() < 5_000);
        prop_assert!(all.windows(2).all(|w| w[0] < w[1]));
        prop_assert_eq!(rec.latest_in(after, after + span), all.last().copied());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn parsing_any_text_never_panics(text in "\\PC{0,60}") {
        let _ = parse_cron(&text);
    }

    #[test]
    fn parsing_cron_like_noise_never_panics(text in "[0-9*/,?A-Za-z@ \t-]{0,40}") {
        if let Err(e) = parse_cron(&text) {
            prop_assert_eq!(e.field(), "cron");
            prop_assert!(e.to_string().starts_with("cron: "));
        }
    }
}
