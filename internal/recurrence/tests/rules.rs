//! Daylight saving time in three zones, cron syntax, intervals, lists,
//! bounds and errors.

use chronos_recurrence::{every, parse_cron, Recurrence, RecurrenceError, Rule};
use proptest::prelude::*;

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn cron(expr: &str, zone: &str) -> Recurrence {
    Recurrence::new(Rule::Cron(parse_cron(expr).unwrap()), zone, None, None).unwrap()
}

fn occurrences(rec: &Recurrence, from: &str, n: usize) -> Vec<String> {
    rec.between(ms(from), i64::MAX, n)
        .into_iter()
        .map(utc)
        .collect()
}

#[test]
fn berlin_spring_forward_skips_the_missing_local_time() {
    // 2026-03-29 02:00 CET jumps to 03:00 CEST: 02:30 does not exist.
    let rec = cron("0 30 2 * * *", "Europe/Berlin");
    assert_eq!(
        occurrences(&rec, "2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T01:30:00Z", // 02:30 CET
            "2026-03-30T00:30:00Z", // 02:30 CEST; none on the 29th
            "2026-03-31T00:30:00Z",
        ]
    );
}

#[test]
fn berlin_fall_back_fires_the_repeated_local_time_once_at_the_first() {
    // 2026-10-25 03:00 CEST falls back to 02:00 CET: 02:30 occurs twice.
    let rec = cron("0 30 2 * * *", "Europe/Berlin");
    assert_eq!(
        occurrences(&rec, "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
    // Asked from inside the second pass of the hour: not again.
    assert_eq!(
        occurrences(&rec, "2026-10-25T01:10:00Z", 1),
        ["2026-10-26T01:30:00Z"]
    );
    // The missed-run policy sees the first pass only.
    assert_eq!(
        rec.latest_in(ms("2026-10-24T12:00:00Z"), ms("2026-10-25T01:45:00Z")),
        Some(ms("2026-10-25T00:30:00Z"))
    );
}

#[test]
fn new_york_spring_forward_and_fall_back() {
    let rec = cron("0 30 2 * * *", "America/New_York");
    // 2026-03-08 02:00 EST jumps to 03:00 EDT.
    assert_eq!(
        occurrences(&rec, "2026-03-07T00:00:00Z", 2),
        ["2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z"]
    );
    // 2026-11-01 02:00 EDT falls back to 01:00 EST; 01:30 occurs twice.
    let rec = cron("0 30 1 * * *", "America/New_York");
    assert_eq!(
        occurrences(&rec, "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    );
}

#[test]
fn lord_howe_half_hour_shifts() {
    // 2026-04-05 02:00 +11 falls back to 01:30 +10:30: 01:45 occurs twice.
    let rec = cron("0 45 1 * * *", "Australia/Lord_Howe");
    assert_eq!(
        occurrences(&rec, "2026-04-04T12:00:00Z", 2),
        ["2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"]
    );
    // 2026-10-04 02:00 +10:30 jumps to 02:30 +11: 02:15 does not exist.
    let rec = cron("0 15 2 * * *", "Australia/Lord_Howe");
    assert_eq!(
        occurrences(&rec, "2026-10-02T12:00:00Z", 2),
        ["2026-10-02T15:45:00Z", "2026-10-04T15:15:00Z"]
    );
}

#[test]
fn hourly_fires_once_for_the_repeated_hour() {
    let rec = cron("@hourly", "America/New_York");
    // 00:00 EDT (04Z), 01:00 EDT (05Z), [01:00 EST (06Z) is the repeat], 02:00 EST (07Z).
    assert_eq!(
        occurrences(&rec, "2026-11-01T03:30:00Z", 3),
        [
            "2026-11-01T04:00:00Z",
            "2026-11-01T05:00:00Z",
            "2026-11-01T07:00:00Z"
        ]
    );
    // Every minute across the fall-back: the repeated hour's minutes once only.
    let rec = cron("0 * * * * *", "Europe/Berlin");
    let n = rec
        .between(ms("2026-10-24T22:00:00Z"), ms("2026-10-25T02:00:00Z"), 1000)
        .len();
    assert_eq!(n, 240 - 60);
}

#[test]
fn every_minute_through_the_repeated_hour_takes_the_first_pass() {
    let rec = cron("0 * * * * *", "Europe/Berlin");
    // 00:30Z is 02:30 CEST, the first pass of the repeated hour.
    assert_eq!(
        occurrences(&rec, "2026-10-25T00:30:00Z", 2),
        ["2026-10-25T00:31:00Z", "2026-10-25T00:32:00Z"]
    );
    // The second pass (01:00Z-01:59Z) has no occurrences.
    assert_eq!(
        occurrences(&rec, "2026-10-25T00:59:30Z", 1),
        ["2026-10-25T02:00:00Z"]
    );
}

#[test]
fn cron_fields_names_steps_lists_and_day_rules() {
    let rec = cron("*/20 15 10 * JAN-MAR mon-fri", "UTC");
    assert_eq!(
        occurrences(&rec, "2026-01-02T10:15:30Z", 4),
        [
            "2026-01-02T10:15:40Z",
            "2026-01-05T10:15:00Z",
            "2026-01-05T10:15:20Z",
            "2026-01-05T10:15:40Z",
        ]
    );
    // Both day fields restricted: either matches (the 1st, or any Sunday).
    let rec = cron("0 0 1 * SUN", "UTC");
    assert_eq!(
        occurrences(&rec, "2026-02-27T00:00:00Z", 3),
        [
            "2026-03-01T00:00:00Z",
            "2026-03-08T00:00:00Z",
            "2026-03-15T00:00:00Z"
        ]
    );
    let rec = cron("0 0 0 13 * FRI", "UTC");
    assert_eq!(
        occurrences(&rec, "2026-01-01T00:00:00Z", 3),
        [
            "2026-01-02T00:00:00Z",
            "2026-01-09T00:00:00Z",
            "2026-01-13T00:00:00Z"
        ]
    );
    // One of them `?`: the other decides alone.
    let rec = cron("0 0 0 13 * ?", "UTC");
    assert_eq!(
        occurrences(&rec, "2026-01-01T00:00:00Z", 1),
        ["2026-01-13T00:00:00Z"]
    );
    // One of them starts with `*` (Vixie cron): both must match, here the
    // odd days that are Fridays.
    let rec = cron("0 0 0 */2 * FRI", "UTC");
    assert_eq!(
        occurrences(&rec, "2026-01-01T00:00:00Z", 2),
        ["2026-01-09T00:00:00Z", "2026-01-23T00:00:00Z"]
    );
    // `a/n` runs to the end of the field; `a-b/n` within the range.
    assert_eq!(
        parse_cron("50/4 * * * * *"),
        parse_cron("50,54,58 * * * * *")
    );
    assert_eq!(
        parse_cron("0 10-20/5 * * *"),
        parse_cron("0 10,15,20 * * *")
    );
    // Day-of-week 7 is Sunday; five fields mean second 0.
    assert_eq!(parse_cron("0 0 * * 7"), parse_cron("0 0 0 * * 0"));
    assert_eq!(parse_cron("0 0 * * 5-7"), parse_cron("0 0 * * FRI,sat,Sun"));
    // February 30th never comes.
    assert_eq!(cron("0 0 0 30 2 *", "UTC").next_after(0), None);
}

#[test]
fn macros_are_their_expressions() {
    let same = [
        ("@yearly", "0 0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * SUN"),
        ("@daily", "0 0 * * *"),
        ("@MIDNIGHT", "0 0 * * *"),
        (" @hourly ", "0 * * * *"),
    ];
    for (m, expr) in same {
        assert_eq!(parse_cron(m), parse_cron(expr), "{m}");
    }
}

#[test]
fn cron_fires_at_whole_seconds_strictly_after() {
    let rec = cron("* * * * * *", "Asia/Kolkata");
    assert_eq!(rec.next_after(1_000), Some(2_000));
    assert_eq!(rec.next_after(1_999), Some(2_000));
    assert_eq!(rec.next_after(-1_500), Some(-1_000));
    let start = ms("2026-06-01T00:00:00.250Z");
    let rec = Recurrence::new(
        Rule::Cron(parse_cron("0 0 * * *").unwrap()),
        "",
        Some(start),
        Some(start + 3 * 86_400_000),
    )
    .unwrap();
    assert_eq!(
        occurrences(&rec, "2026-05-01T00:00:00Z", 10),
        [
            "2026-06-02T00:00:00Z",
            "2026-06-03T00:00:00Z",
            "2026-06-04T00:00:00Z"
        ]
    );
}

#[test]
fn every_never_drifts_and_honours_start_and_end() {
    let start = ms("2026-01-01T00:00:00Z");
    let rec = Recurrence::new(
        Rule::Every(every(1_000, start).unwrap()),
        "Europe/Berlin",
        Some(start),
        Some(start + 10_000),
    )
    .unwrap();
    assert_eq!(rec.next_after(0), Some(start));
    // A fire 700 ms late does not move the next occurrence.
    assert_eq!(rec.next_after(start + 3_700), Some(start + 4_000));
    assert_eq!(rec.next_after(start + 9_999), Some(start + 10_000));
    assert_eq!(rec.next_after(start + 10_000), None);
    assert_eq!(
        rec.latest_in(start + 1_000, start + 5_500),
        Some(start + 5_000)
    );
    assert_eq!(rec.latest_in(start + 5_000, start + 5_500), None);
    assert_eq!(rec.latest_in(0, start - 1), None);
    assert_eq!(rec.latest_in(0, i64::MAX), Some(start + 10_000));
    assert_eq!(
        rec.between(start + 2_000, start + 60_000, 3),
        [start + 3_000, start + 4_000, start + 5_000]
    );
    assert_eq!(rec.between(start, start + 60_000, 100).len(), 10);
    assert!(rec.between(start, start + 60_000, 0).is_empty());
    let cron = cron("*/10 * * * * *", "UTC");
    assert_eq!(cron.latest_in(start, start + 35_000), Some(start + 30_000));
}

#[test]
fn every_is_absolute_time_across_dst() {
    // Hourly from midnight Berlin time, through the fall-back: 25 in a day.
    let anchor = ms("2026-10-24T22:00:00Z");
    let rec = Recurrence::new(
        Rule::Every(every(3_600_000, anchor).unwrap()),
        "Europe/Berlin",
        None,
        None,
    )
    .unwrap();
    let day = rec.between(anchor - 1, ms("2026-10-25T22:59:59Z"), 100);
    assert_eq!(day.len(), 25);
    assert!(day.windows(2).all(|w| w[1] - w[0] == 3_600_000));
}

#[test]
fn every_with_a_start_after_its_anchor_keeps_the_anchor_grid() {
    let rec = Recurrence::new(
        Rule::Every(every(60_000, 10_000).unwrap()),
        "",
        Some(100_000),
        None,
    )
    .unwrap();
    assert_eq!(rec.next_after(0), Some(130_000));
    assert_eq!(rec.latest_in(0, 129_999), None);
    assert_eq!(rec.latest_in(0, 200_000), Some(190_000));
}

#[test]
fn times_are_sorted_deduplicated_and_bounded() {
    let rec = Recurrence::new(Rule::Times(vec![30, 10, 20, 10]), "", None, Some(25)).unwrap();
    assert_eq!(rec.between(0, i64::MAX, 10), [10, 20]);
    assert_eq!(rec.between(0, i64::MAX, 1), [10]);
    assert_eq!(rec.latest_in(0, 100), Some(20));
    assert_eq!(rec.latest_in(20, 100), None);
    assert_eq!(rec.next_after(10), Some(20));
    assert_eq!(rec.next_after(20), None);
    let rec = Recurrence::new(Rule::Times(vec![5, 15, 25]), "", Some(10), None).unwrap();
    assert_eq!(rec.next_after(0), Some(15));
    assert_eq!(rec.latest_in(0, 14), None);
    assert_eq!(rec.between(0, 20, 10), [15]);
}

#[test]
fn errors_name_the_field() {
    let cron_err = |e: &str| parse_cron(e).unwrap_err();
    assert_eq!(
        cron_err("0 0 25 * * *").to_string(),
        "cron: field 'hour' value 25 is out of range 0-23"
    );
    // (expression, cron field named in the message)
    for (bad, part) in [
        ("60 * * * * *", "'second'"),
        ("*/0 * * * *", "'minute'"),
        ("5-1 * * * *", "'minute'"),
        (
            "1,,2 * * * *",
            "'minute' has an empty list item in \"1,,2\"",
        ),
        ("/5 * * * *", "'minute' has no value before the step"),
        ("0 5-1 * * *", "'hour' range \"5-1\" is reversed"),
        ("0 -1 * * * *", "'minute'"),
        ("0 ? * * * *", "'minute'"),
        ("0 24 * * *", "'hour'"),
        ("0 0 32 * *", "'day-of-month'"),
        ("0 0 0 * *", "'day-of-month'"),
        ("0 0 * 13 *", "'month'"),
        ("0 0 * FEBRUARY *", "'month'"),
        ("0 0 * * 8", "'day-of-week'"),
        ("0 0 * * FOO", "'day-of-week'"),
        ("0 0 * * MON-", "'day-of-week'"),
        ("0 0 * * 1/x", "'day-of-week'"),
        ("", "6 (second"),
        ("* * * *", "has 4 fields"),
        ("* * * * * * *", "has 7 fields"),
        ("@every 5s", "unknown macro"),
        ("@reboot", "unknown macro"),
    ] {
        let err = cron_err(bad);
        assert_eq!(err.field(), "cron", "{bad:?}");
        let text = err.to_string();
        assert!(
            text.starts_with("cron: ") && text.contains(part),
            "{bad:?}: {text}"
        );
    }

    let field = |r: Result<Recurrence, RecurrenceError>| r.unwrap_err().field();
    assert_eq!(every(0, 0).unwrap_err().field(), "every");
    assert_eq!(every(-5_000, 0).unwrap_err().field(), "every");
    assert_eq!(
        every(999, 0).unwrap_err().to_string(),
        "every: an interval of 999 ms is too short; it must be at least 1000 ms"
    );
    let rule = || Rule::Every(every(1_000, 1).unwrap());
    assert_eq!(
        field(Recurrence::new(rule(), "Mars/Olympus", None, None)),
        "time_zone"
    );
    assert_eq!(field(Recurrence::new(rule(), "", Some(10), Some(5))), "end");
    assert_eq!(field(Recurrence::new(rule(), "", Some(0), None)), "start");
    assert_eq!(
        field(Recurrence::new(Rule::Times(vec![]), "", None, None)),
        "times"
    );
    assert_eq!(
        field(Recurrence::new(Rule::Times(vec![1; 1001]), "", None, None)),
        "times"
    );
    assert!(Recurrence::new(Rule::Times(vec![1; 1000]), "", None, None).is_ok());
    assert!(Recurrence::new(rule(), "America/New_York", Some(5), Some(5)).is_ok());
}

#[test]
fn impossible_and_rare_dates() {
    // Five years of February 30th, and leap days.
    for zone in ["UTC", "Australia/Lord_Howe"] {
        for _ in 0..20 {
            assert_eq!(cron("0 0 0 30 2 *", zone).next_after(0), None);
        }
        let rec = cron("59 59 23 29 2 *", zone);
        let leap_days = rec.between(0, ms("2050-01-01T00:00:00Z"), 100);
        assert_eq!(leap_days.len(), 20);
    }
}

#[test]
fn the_search_looks_five_years_ahead() {
    // 2100 is not a leap year: from 2096 the next leap day is 8 years away.
    let rec = cron("0 0 0 29 2 *", "UTC");
    assert_eq!(rec.next_after(ms("2096-03-01T00:00:00Z")), None);
    assert_eq!(
        rec.next_after(ms("2099-03-01T00:00:00Z")).map(utc),
        Some("2104-02-29T00:00:00Z".to_string())
    );
}

fn any_rule() -> impl Strategy<Value = Rule> {
    prop_oneof![
        prop::sample::select(vec![
            "* * * * * *",
            "0 0 0 29 2 *",
            "0 30 2 * * 0",
            "@yearly"
        ])
        .prop_map(|e| Rule::Cron(parse_cron(e).unwrap())),
        (1_000i64..=i64::MAX, any::<i64>()).prop_map(|(p, a)| Rule::Every(every(p, a).unwrap())),
        prop::collection::vec(1i64..=i64::MAX, 1..5).prop_map(Rule::Times),
    ]
}

proptest! {
    #[test]
    fn any_instant_gives_an_answer_in_bounds(
        rule in any_rule(),
        zone in prop::sample::select(vec!["", "Europe/Berlin", "Australia/Lord_Howe"]),
        start in prop::option::of(1i64..=i64::MAX),
        after in any::<i64>(),
        at in any::<i64>(),
    ) {
        let Ok(rec) = Recurrence::new(rule, zone, start, None) else {
            return Ok(());
        };
        let lower = |t: i64| start.is_none_or(|s| t >= s);
        if let Some(next) = rec.next_after(after) {
            prop_assert!(next > after && lower(next));
        }
        if let Some(latest) = rec.latest_in(after, at) {
            prop_assert!(latest > after && latest <= at && lower(latest));
        }
        let some = rec.between(after, at, 3);
        prop_assert!(some.iter().all(|t| *t > after && *t <= at && lower(*t)));
        prop_assert!(some.windows(2).all(|w| w[0] < w[1]));
    }
}

#[test]
fn a_list_with_instants_closer_than_a_second_is_refused_naming_them() {
    use chronos_recurrence::{check_spacing, RecurrenceError};
    assert_eq!(check_spacing(&[5_000, 1_000, 2_000, 5_000]), Ok(()));
    let e = check_spacing(&[9_000, 1_000, 1_999]).unwrap_err();
    assert_eq!(
        e,
        RecurrenceError::TimesTooClose {
            first: 1_000,
            next: 1_999
        }
    );
    assert_eq!(e.field(), "times");
    assert!(e.to_string().contains("999 ms apart"), "{e}");
}
