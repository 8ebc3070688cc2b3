//! Daylight saving time in two zones, intervals, lists, bounds and errors.

use chronos_recurrence::{every, parse_cron, Recurrence, RecurrenceError, Rule};

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

fn cron(expr: &str, zone: &str) -> Recurrence {
    Recurrence::new(Rule::Cron(parse_cron(expr).unwrap()), zone, None, None).unwrap()
}

fn occurrences(rec: &Recurrence, from: &str, n: usize) -> Vec<String> {
    rec.between(ms(from), i64::MAX, n)
        .into_iter()
        .map(|t| {
            chrono::DateTime::from_timestamp_millis(t)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
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
    // Day-of-week 7 is Sunday.
    assert_eq!(parse_cron("0 0 * * 7"), parse_cron("0 0 * * 0"));
    // February 30th never comes.
    assert_eq!(cron("0 0 0 30 2 *", "UTC").next_after(0), None);
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
    assert_eq!(rec.next_after(start + 10_000), None);
    assert_eq!(
        rec.latest_in(start + 1_000, start + 5_500),
        Some(start + 5_000)
    );
    assert_eq!(rec.latest_in(start + 5_000, start + 5_500), None);
    assert_eq!(
        rec.between(start + 2_000, start + 60_000, 3),
        [start + 3_000, start + 4_000, start + 5_000]
    );
    let cron = cron("*/10 * * * * *", "UTC");
    assert_eq!(cron.latest_in(start, start + 35_000), Some(start + 30_000));
}

#[test]
fn times_are_sorted_deduplicated_and_bounded() {
    let rec = Recurrence::new(Rule::Times(vec![30, 10, 20, 10]), "", None, Some(25)).unwrap();
    assert_eq!(rec.between(0, i64::MAX, 10), [10, 20]);
    assert_eq!(rec.latest_in(0, 100), Some(20));
}

#[test]
fn errors_name_the_field() {
    let field = |r: Result<Recurrence, RecurrenceError>| r.unwrap_err().field();
    let cron_err = |e: &str| parse_cron(e).unwrap_err();
    assert_eq!(
        cron_err("0 0 25 * * *").to_string(),
        "cron: field 'hour' value 25 is out of range 0-23"
    );
    for bad in [
        "",
        "* * * *",
        "* * * * * * *",
        "@every 5s",
        "*/0 * * * *",
        "5-1 * * * *",
        "0 0 * * FOO",
        "0 0 32 * *",
        "0 0 * 13 *",
        "1,,2 * * * *",
        "60 * * * * *",
    ] {
        assert_eq!(cron_err(bad).field(), "cron", "{bad:?}");
    }
    assert!(cron_err("0 0 * 13 *").to_string().contains("'month'"));
    assert!(cron_err("0 0 * * 8").to_string().contains("'day-of-week'"));
    assert_eq!(every(0, 0).unwrap_err().field(), "every");
    assert_eq!(every(999, 0).unwrap_err().field(), "every");
    let utc = || Rule::Every(every(1_000, 1).unwrap());
    assert_eq!(
        field(Recurrence::new(utc(), "Mars/Olympus", None, None)),
        "time_zone"
    );
    assert_eq!(field(Recurrence::new(utc(), "", Some(10), Some(5))), "end");
    assert_eq!(
        field(Recurrence::new(Rule::Times(vec![]), "", None, None)),
        "times"
    );
    assert_eq!(
        field(Recurrence::new(Rule::Times(vec![1; 1001]), "", None, None)),
        "times"
    );
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
