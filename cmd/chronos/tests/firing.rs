//! The leader's timing wheel moves due events out of `pending`: each exactly
//! once, none early (the server asserts `due <= fire` where it fires and where
//! it applies — a debug build aborts on an early fire), also across kill -9.
//! Delivery to consumer groups builds on this.

mod common;

use std::time::{Duration, Instant};

use chronos_proto::v1::Event;
use common::{event, now_ms, publish_ok, Server};

fn metric(server: &Server, name: &str) -> f64 {
    server.metric(name)
}

fn wait_for_fired(server: &Server, want: f64, deadline: Duration) {
    let until = Instant::now() + deadline;
    loop {
        let got = metric(server, "chronos_fired_events_total");
        if got == want {
            return;
        }
        assert!(got < want, "fired {got}, more than the {want} published");
        assert!(
            Instant::now() < until,
            "only {got} of {want} fired in {deadline:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn at(id: String, schedule_ts: i64) -> Event {
    Event {
        schedule_ts,
        ..event("wheel", &id, b"x")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_events_fire_once_and_far_ones_wait() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.events().await;
    let base = now_ms();
    let mut events: Vec<Event> = (0..300)
        .map(|i| at(format!("soon-{i}"), base + 300 + (i * 37) % 1200))
        .collect();
    events.extend((0..50).map(|i| at(format!("now-{i}"), 0)));
    events.extend((0..20).map(|i| at(format!("later-{i}"), base + 3_600_000)));
    publish_ok(&mut c, events).await;

    wait_for_fired(&server, 350.0, Duration::from_secs(20));
    let fires = metric(&server, "chronos_fire_lateness_seconds_count");
    assert!(fires >= 350.0, "lateness recorded for {fires} fires");
    // The hour-away events are beyond the wheel's 60 s window: on disk, not
    // in memory, and not fired.
    assert_eq!(metric(&server, "chronos_fired_events_total"), 350.0);
    assert_eq!(
        metric(&server, "chronos_wheel_entries"),
        0.0,
        "far events stay out of the wheel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_events_fire_after_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &["--partitions", "4"]);
    let mut c = server.events().await;
    let base = now_ms();
    let events = (0..200)
        .map(|i| at(format!("e{i}"), base + 2_000 + (i * 13) % 1_000))
        .collect();
    publish_ok(&mut c, events).await;
    server.kill9();

    let server = Server::start(&data, &["--partitions", "4"]);
    wait_for_fired(&server, 200.0, Duration::from_secs(20));
    assert!(
        now_ms() >= base + 2_000,
        "fired before the earliest due time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_beyond_the_window_are_loaded_as_it_moves() {
    let dir = tempfile::tempdir().unwrap();
    // A 400 ms window: events due in 1.5-2.5 s are on disk at publish time and
    // must be picked up by the refill scans as time moves.
    let env = [("CHRONOS_SCHEDULER__HORIZON", "400ms")];
    let server = Server::start_with_env(&dir.path().join("data"), &[], &env);
    let mut c = server.events().await;
    let base = now_ms();
    let events = (0..150)
        .map(|i| at(format!("w{i}"), base + 1_500 + (i * 7) % 1_000))
        .collect();
    publish_ok(&mut c, events).await;
    assert_eq!(
        metric(&server, "chronos_wheel_entries"),
        0.0,
        "nothing within the window yet"
    );
    wait_for_fired(&server, 150.0, Duration::from_secs(20));
    assert!(
        now_ms() >= base + 1_500,
        "fired before the earliest due time"
    );
}

fn cancel_req(topic: &str, id: &str) -> chronos_proto::v1::CancelRequest {
    chronos_proto::v1::CancelRequest {
        topic: topic.into(),
        message_id: id.into(),
        key: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_pending_event_and_refuses_fired_or_unknown_ones() {
    use tonic::Code;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.events().await;
    let base = now_ms();
    // 20 events due in ~1 s; every other one is cancelled before it comes due.
    let events = (0..20).map(|i| at(format!("c{i}"), base + 1_000)).collect();
    let published = publish_ok(&mut c, events).await;
    for i in (0..20).step_by(2) {
        let r = c
            .cancel(cancel_req("wheel", &format!("c{i}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (r.partition, r.offset),
            (published.results[i].partition, published.results[i].offset)
        );
    }
    // Cancelling again is answered the same way (safe to retry).
    let again = c
        .cancel(cancel_req("wheel", "c0"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.offset, published.results[0].offset);

    wait_for_fired(&server, 10.0, Duration::from_secs(20));
    let fired = c.cancel(cancel_req("wheel", "c1")).await.unwrap_err();
    assert_eq!(
        fired.code(),
        Code::FailedPrecondition,
        "{}",
        fired.message()
    );
    assert!(
        fired.message().contains("already fired"),
        "{}",
        fired.message()
    );

    let unknown = c.cancel(cancel_req("wheel", "nope")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{}", unknown.message());
    let other_topic = c.cancel(cancel_req("elsewhere", "c2")).await.unwrap_err();
    assert_eq!(other_topic.code(), Code::NotFound);
    let bad = c.cancel(cancel_req("__x", "c2")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("topic"), "{}", bad.message());
    let bad = c.cancel(cancel_req("wheel", "")).await.unwrap_err();
    assert!(bad.message().starts_with("message_id"), "{}", bad.message());
    // Exactly the ten uncancelled events fired.
    assert_eq!(metric(&server, "chronos_fired_events_total"), 10.0);
}

#[tokio::test]
async fn list_topics_counts_pending_per_topic() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.events().await;
    let later = now_ms() + 3_600_000;
    let mut events: Vec<Event> = (0..3)
        .map(|i| Event {
            schedule_ts: later,
            ..event("alpha", &format!("a{i}"), b"")
        })
        .collect();
    events.extend((0..2).map(|i| event("beta", &format!("b{i}"), b"")));
    publish_ok(&mut c, events).await;
    let r = c
        .cancel(cancel_req("alpha", "a0"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.offset < 10);
    let topics = server
        .admin()
        .await
        .list_topics(chronos_proto::v1::ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner()
        .topics;
    let got: Vec<(String, u64)> = topics.into_iter().map(|t| (t.name, t.pending)).collect();
    assert_eq!(got, vec![("alpha".to_string(), 2), ("beta".to_string(), 0)]);
}

/// A reschedule that comes after its event fired moves nothing: the publish
/// is the fired event's duplicate. Storing the moved copy (as before) fired
/// the event a second time, to every group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reschedule_after_the_event_fired_is_its_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut member = common::Member::join(&server, common::subscribe_req("g", "wheel", 10)).await;
    let mut c = server.events().await;
    let req = |schedule_ts, reschedule| chronos_proto::v1::PublishRequest {
        event: Some(at("once".to_string(), schedule_ts)),
        reschedule,
    };
    let first = c
        .publish(req(now_ms() + 200, false))
        .await
        .unwrap()
        .into_inner();
    let fired = member.next(Duration::from_secs(10)).await;
    assert_eq!(fired.offset, first.offset);
    member.ack(&[&fired.delivery_id]).await;
    let later = c
        .publish(req(now_ms() + 300, true))
        .await
        .unwrap()
        .into_inner();
    assert!(later.duplicate, "moved a fired event: {later:?}");
    assert_eq!((later.offset, later.due_ts), (first.offset, first.due_ts));
    let again = member.next_within(Duration::from_millis(1_500)).await;
    assert_eq!(again, None, "delivered a second time");
    assert_eq!(metric(&server, "chronos_pending_events"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_moves_a_pending_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.events().await;
    let req = |schedule_ts, reschedule| chronos_proto::v1::PublishRequest {
        event: Some(at("moving".to_string(), schedule_ts)),
        reschedule,
    };
    let first = c
        .publish(req(now_ms() + 3_600_000, false))
        .await
        .unwrap()
        .into_inner();
    // Without the flag it is a duplicate; with it, it moves to one second from now.
    assert!(
        c.publish(req(now_ms() + 1_000, false))
            .await
            .unwrap()
            .into_inner()
            .duplicate
    );
    let soon = now_ms() + 1_000;
    let moved = c.publish(req(soon, true)).await.unwrap().into_inner();
    assert!(!moved.duplicate);
    assert_eq!(moved.due_ts, soon);
    assert_ne!(moved.offset, first.offset);
    assert_eq!(
        metric(&server, "chronos_pending_events"),
        1.0,
        "the hour-away copy is gone"
    );

    wait_for_fired(&server, 1.0, Duration::from_secs(20));
    assert!(now_ms() >= soon);
    assert_eq!(
        metric(&server, "chronos_pending_events"),
        0.0,
        "nothing left to fire an hour from now"
    );
    // Now it has fired: a plain publish is a duplicate of the moved event.
    let again = c
        .publish(req(now_ms() + 1_000, false))
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.offset, moved.offset);
}
