//! Recurring schedules over a real server: each occurrence is one event with
//! a deterministic id and its nominal time in a header, never early; pause,
//! resume, update and delete take effect at the next occurrence; bad input
//! names the field; and after kill -9 and a 10 s outage every occurrence is
//! stored once and each missed-run policy does what it says.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::schedule::Recurrence;
use chronos_proto::v1::{
    CreateScheduleRequest, DeleteScheduleRequest, Delivery, GetScheduleRequest,
    ListSchedulesRequest, MissedRuns, PauseScheduleRequest, ResumeScheduleRequest, Schedule,
    ScheduleInfo, ScheduleTimes, TriggerScheduleRequest, UpdateScheduleRequest,
};
use common::{now_ms, replay_all, subscribe_req, Member, Server};
use tonic::transport::Channel;
use tonic::Code;

const NOMINAL: &str = "chronos-nominal-time";

fn every_second(id: &str, topic: &str, payload: &[u8]) -> Schedule {
    Schedule {
        schedule_id: id.into(),
        topic: topic.into(),
        payload: payload.to_vec().into(),
        recurrence: Some(Recurrence::EveryMs(1000)),
        ..Default::default()
    }
}

fn parse_ts(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
        .timestamp_millis()
}

/// A delivered occurrence: (schedule id, nominal ms, payload, received ms).
struct Seen {
    schedule: String,
    nominal: i64,
    payload: Vec<u8>,
    received: i64,
    message_id: String,
}

fn seen(d: &Delivery) -> Seen {
    let ev = d.event.clone().unwrap_or_default();
    let nominal_text = ev.headers.get(NOMINAL).cloned().unwrap_or_default();
    let schedule = ev
        .headers
        .get("chronos-schedule-id")
        .cloned()
        .unwrap_or_default();
    assert!(
        ev.message_id.starts_with(&format!("{schedule}@")),
        "{} is not <schedule_id>@<time>",
        ev.message_id
    );
    let received = now_ms();
    let nominal = parse_ts(&nominal_text);
    assert!(
        received >= nominal,
        "{} delivered {} ms before its nominal time",
        ev.message_id,
        nominal - received
    );
    assert!(received >= ev.schedule_ts, "{} early", ev.message_id);
    Seen {
        schedule,
        nominal,
        payload: ev.payload.to_vec(),
        received,
        message_id: ev.message_id,
    }
}

/// Takes deliveries (acking each) until `until`.
async fn take_until(m: &mut Member, until: Instant) -> Vec<Seen> {
    let mut out = Vec::new();
    while let Some(wait) = until.checked_duration_since(Instant::now()) {
        let Some(d) = m.next_within(wait).await else {
            break;
        };
        m.ack(&[&d.delivery_id]).await;
        out.push(seen(&d));
    }
    out
}

async fn schedule_info(
    c: &mut EventServiceClient<Channel>,
    id: &str,
    upcoming: u32,
) -> ScheduleInfo {
    c.get_schedule(GetScheduleRequest {
        schedule_id: id.into(),
        upcoming,
    })
    .await
    .expect("get_schedule")
    .into_inner()
    .schedule
    .expect("schedule info")
}

async fn create(c: &mut EventServiceClient<Channel>, s: Schedule) -> i64 {
    let resp = c
        .create_schedule(CreateScheduleRequest { schedule: Some(s) })
        .await
        .expect("create_schedule")
        .into_inner();
    resp.schedule.expect("schedule info").created_ts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occurrences_fire_once_on_time_and_follow_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.events().await;
    let mut m = Member::join(&server, subscribe_req("g", "ticks", 100)).await;
    let created = create(&mut c, every_second("tick", "ticks", b"v1")).await;

    // Running: one event a second, on the grid of the creation time.
    let got = take_until(&mut m, Instant::now() + Duration::from_millis(4_500)).await;
    assert!(got.len() >= 3, "only {} occurrences in 4.5 s", got.len());
    let nominals: Vec<i64> = got.iter().map(|s| s.nominal).collect();
    for (i, n) in nominals.iter().enumerate() {
        assert_eq!((n - created) % 1000, 0, "nominal {n} is off the grid");
        if i > 0 {
            assert_eq!(n - nominals[i - 1], 1000, "occurrences {nominals:?}");
        }
    }
    for s in &got {
        assert!(
            s.received - s.nominal < 1_000,
            "{} fired {} ms late",
            s.message_id,
            s.received - s.nominal
        );
    }
    let info = schedule_info(&mut c, "tick", 3).await;
    assert_eq!(info.upcoming_ts.len(), 3);
    assert_eq!(info.upcoming_ts[1] - info.upcoming_ts[0], 1000);
    assert!(info.occurrences >= got.len() as u64);

    // Paused: nothing due after the pause applied arrives.
    c.pause_schedule(PauseScheduleRequest {
        schedule_id: "tick".into(),
    })
    .await
    .unwrap();
    let paused_at = now_ms();
    let during = take_until(&mut m, Instant::now() + Duration::from_millis(3_000)).await;
    assert!(
        during.iter().all(|s| s.nominal <= paused_at),
        "fired while paused: {:?}",
        during.iter().map(|s| &s.message_id).collect::<Vec<_>>()
    );

    // Resumed and updated: new occurrences carry the new payload.
    c.resume_schedule(ResumeScheduleRequest {
        schedule_id: "tick".into(),
    })
    .await
    .unwrap();
    c.update_schedule(UpdateScheduleRequest {
        schedule: Some(every_second("tick", "ticks", b"v2")),
    })
    .await
    .unwrap();
    let updated_at = now_ms();
    let after = take_until(&mut m, Instant::now() + Duration::from_millis(3_000)).await;
    let fresh: Vec<&Seen> = after.iter().filter(|s| s.nominal > updated_at).collect();
    assert!(
        fresh.len() >= 2,
        "{} occurrences after the update",
        fresh.len()
    );
    assert!(fresh.iter().all(|s| s.payload == b"v2"));

    // Triggered: one extra occurrence now, under its own id.
    let trig = c
        .trigger_schedule(TriggerScheduleRequest {
            schedule_id: "tick".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(trig.message_id.starts_with("tick@trigger-"));
    let until = Instant::now() + Duration::from_secs(5);
    let mut triggered = false;
    while !triggered {
        let batch = take_until(&mut m, Instant::now() + Duration::from_millis(500)).await;
        triggered = batch.iter().any(|s| s.message_id == trig.message_id);
        assert!(
            Instant::now() < until,
            "the triggered occurrence never came"
        );
    }

    // Deleted: never again, and gone from reads.
    c.delete_schedule(DeleteScheduleRequest {
        schedule_id: "tick".into(),
    })
    .await
    .unwrap();
    let deleted_at = now_ms();
    let later = take_until(&mut m, Instant::now() + Duration::from_millis(3_000)).await;
    assert!(later.iter().all(|s| s.nominal <= deleted_at));
    let gone = c
        .get_schedule(GetScheduleRequest {
            schedule_id: "tick".into(),
            upcoming: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // Each occurrence reached the group once (everything was acked at once,
    // so nothing is redelivered). An update stores its pending occurrence
    // again under the same id after cancelling it: still one delivery.
    let mut ids = BTreeSet::new();
    for s in got.iter().chain(&during).chain(&after).chain(&later) {
        assert!(
            ids.insert(s.message_id.clone()),
            "{} delivered twice",
            s.message_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.events().await;
    let base = every_second("s1", "t", b"x");
    let cases: Vec<(Schedule, &str)> = vec![
        (
            Schedule {
                recurrence: Some(Recurrence::Cron("0 0 25 * * *".into())),
                ..base.clone()
            },
            "schedule.cron: field 'hour' value 25 is out of range 0-23",
        ),
        (
            Schedule {
                recurrence: Some(Recurrence::Cron("every minute".into())),
                ..base.clone()
            },
            "schedule.cron:",
        ),
        (
            Schedule {
                time_zone: "Mars/Olympus".into(),
                ..base.clone()
            },
            "schedule.time_zone:",
        ),
        (
            Schedule {
                recurrence: Some(Recurrence::EveryMs(500)),
                ..base.clone()
            },
            "schedule.every_ms:",
        ),
        (
            Schedule {
                recurrence: Some(Recurrence::EveryMs(0)),
                ..base.clone()
            },
            "schedule.every_ms:",
        ),
        (
            Schedule {
                recurrence: Some(Recurrence::Times(ScheduleTimes {
                    times_ts: vec![now_ms() + 60_000, now_ms() + 10_000, now_ms() + 10_500],
                })),
                ..base.clone()
            },
            "schedule.times: instants",
        ),
        (
            Schedule {
                start_ts: now_ms() + 10_000,
                end_ts: now_ms(),
                ..base.clone()
            },
            "schedule.end_ts:",
        ),
        (
            Schedule {
                recurrence: None,
                ..base.clone()
            },
            "schedule.recurrence:",
        ),
        (
            Schedule {
                topic: "".into(),
                ..base.clone()
            },
            "schedule.topic:",
        ),
        (
            Schedule {
                schedule_id: "x".repeat(101),
                ..base.clone()
            },
            "schedule.schedule_id:",
        ),
    ];
    for (schedule, want) in cases {
        let err = c
            .create_schedule(CreateScheduleRequest {
                schedule: Some(schedule),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(
            err.message().starts_with(want),
            "{:?} does not start with {want:?}",
            err.message()
        );
    }
    // A retried create is fine; the same id with other content is not.
    create(&mut c, base.clone()).await;
    let again = c
        .create_schedule(CreateScheduleRequest {
            schedule: Some(base.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.existed);
    let other = c
        .create_schedule(CreateScheduleRequest {
            schedule: Some(Schedule {
                payload: b"other".to_vec().into(),
                ..base
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists);
    assert!(other.message().starts_with("schedule_id:"));
    let missing = c
        .pause_schedule(PauseScheduleRequest {
            schedule_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // Listing pages through every partition to the end.
    let mut token = String::new();
    let mut listed = Vec::new();
    loop {
        let page = c
            .list_schedules(ListSchedulesRequest {
                topic: "t".into(),
                page_token: token.clone(),
                page_size: 1,
            })
            .await
            .unwrap()
            .into_inner();
        listed.extend(
            page.schedules
                .into_iter()
                .map(|s| s.schedule.unwrap().schedule_id),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, ["s1"]);
}

/// Nominal times of each schedule's stored occurrences; asserts none twice.
async fn stored(c: &mut EventServiceClient<Channel>, topic: &str) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for e in replay_all(c, topic).await {
        let ev = e.event.unwrap();
        assert!(
            ids.insert(ev.message_id.clone()),
            "{} stored twice",
            ev.message_id
        );
        let schedule = ev.headers["chronos-schedule-id"].clone();
        let nominal = parse_ts(&ev.headers[NOMINAL]);
        assert!(e.due_ts >= nominal, "{} due before its time", ev.message_id);
        out.entry(schedule).or_default().push(nominal);
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_and_an_outage_each_missed_run_policy_holds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]);
    let mut c = server.events().await;
    let policies = [
        ("skip", MissedRuns::Skip),
        ("once", MissedRuns::FireOnce),
        ("all", MissedRuns::CatchUp),
    ];
    for (id, policy) in policies {
        create(
            &mut c,
            Schedule {
                missed_runs: policy as i32,
                ..every_second(id, "outage", id.as_bytes())
            },
        )
        .await;
    }
    let mut m = Member::join(&server, subscribe_req("g", "outage", 100)).await;
    take_until(&mut m, Instant::now() + Duration::from_secs(3)).await;
    server.kill9();
    let killed = now_ms();
    // The outage: 10 s without a leader.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let restarted = now_ms();
    let server = Server::start(&data, &[]);
    let mut c = server.events().await;
    let mut m = Member::join(&server, subscribe_req("g", "outage", 100)).await;
    let delivered = take_until(&mut m, Instant::now() + Duration::from_secs(4)).await;
    let by_schedule = stored(&mut c, "outage").await;

    // Stored ahead before the crash (2 to 2.5 s ahead): those are accepted
    // events and fire late; after them the outage begins.
    let outage = killed + 2_500..restarted;
    let missed = |id: &str| -> Vec<i64> {
        by_schedule[id]
            .iter()
            .copied()
            .filter(|n| outage.contains(n))
            .collect()
    };
    assert_eq!(missed("skip"), Vec::<i64>::new(), "skip fired missed runs");
    assert!(
        missed("once").len() <= 1,
        "fire_once fired {:?}",
        missed("once")
    );
    let once = &by_schedule["once"];
    assert!(
        once.iter()
            .any(|n| *n > killed + 2_000 && *n < restarted + 3_000),
        "fire_once fired nothing for the outage: {once:?}"
    );
    // catch_up: no gap at all, before, during or after the outage.
    let all = &by_schedule["all"];
    for pair in all.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "catch_up has a gap: {all:?}");
    }
    assert!(all.last().unwrap() > &restarted, "catch_up did not go on");
    // Each stored occurrence reached the group (the ones after the restart
    // at least), none early (checked as they arrived).
    let got: BTreeSet<(String, i64)> = delivered
        .iter()
        .map(|s| (s.schedule.clone(), s.nominal))
        .collect();
    for (id, nominals) in &by_schedule {
        for n in nominals
            .iter()
            .filter(|n| **n > restarted && **n < now_ms() - 1_500)
        {
            assert!(got.contains(&(id.clone(), *n)), "{id}@{n} not delivered");
        }
    }
    // The runs caught up fired late, and the server's fire lateness says so
    // (an occurrence stored after its time is not "due at once").
    let (_, body) = server.http_get("/metrics").unwrap();
    let sum = |prefix: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    };
    let within_1s: f64 = body
        .lines()
        .filter(|l| l.starts_with("chronos_fire_lateness_seconds_bucket") && l.contains("le=\"1\""))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    let over_1s = sum("chronos_fire_lateness_seconds_count") - within_1s;
    let caught_up = missed("all").len();
    assert!(
        caught_up >= 2 && over_1s >= (caught_up - 1) as f64,
        "{caught_up} runs caught up, {over_1s} fires over 1 s late"
    );
}

/// Thousands of schedules on one instant are stored before the usual window
/// (the leader counted them as their creates applied); a kill -9 while it
/// stores them loses none and repeats none: after the restart each is
/// stored once and delivered, none early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_burst_is_stored_early_loses_and_repeats_nothing() {
    const SCHEDULES: usize = 8_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--partitions", "1"];
    let mut server = Server::start(&data, &args);
    let c = server.events().await;
    let at = (now_ms() / 1_000 + 20) * 1_000;
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let mut c = c.clone();
            tokio::spawn(async move {
                for i in (t..SCHEDULES).step_by(16) {
                    let s = Schedule {
                        start_ts: at,
                        recurrence: Some(Recurrence::EveryMs(3_600_000)),
                        ..every_second(&format!("b{i}"), "burst", b"x")
                    };
                    create(&mut c, s).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        now_ms() < at - 6_000,
        "creating {SCHEDULES} schedules took too long for the test"
    );
    // Storing starts about 3 s ahead (8 000 at the first guess of the
    // pace; the usual window would start 2.5 s ahead): killed once the
    // first is stored, while the rest are being stored (or 1.5 s ahead).
    let mut probe = c.clone();
    loop {
        if schedule_info(&mut probe, "b0", 0).await.occurrences > 0 || now_ms() >= at - 1_500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill9();
    let server = Server::start(&data, &args);
    let mut c = server.events().await;
    let mut m = Member::join(&server, subscribe_req("g", "burst", 1_000)).await;
    let until = Instant::now() + Duration::from_millis((at - now_ms()).max(0) as u64 + 60_000);
    let mut got = BTreeSet::new();
    // Acked a few hundred at a time: one round trip per ack is too slow here.
    let mut unacked = Vec::new();
    while got.len() < SCHEDULES {
        let Some(wait) = until.checked_duration_since(Instant::now()) else {
            break;
        };
        let d = m.next_within(wait.min(Duration::from_millis(200))).await;
        if let Some(d) = &d {
            let s = seen(d);
            assert_eq!(s.nominal, at, "{} is not of the instant", s.message_id);
            got.insert(s.schedule);
            unacked.push(d.delivery_id.clone());
        }
        if unacked.len() >= 256 || (d.is_none() && !unacked.is_empty()) {
            let ids: Vec<&str> = unacked.iter().map(String::as_str).collect();
            m.ack(&ids).await;
            unacked.clear();
        }
    }
    assert_eq!(got.len(), SCHEDULES, "not every occurrence was delivered");
    // Stored once each (`stored` fails on an id stored twice).
    let by_schedule = stored(&mut c, "burst").await;
    assert_eq!(by_schedule.len(), SCHEDULES);
    assert!(by_schedule.values().all(|v| v == &[at]));
}
