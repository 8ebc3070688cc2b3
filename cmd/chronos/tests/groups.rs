//! Consumer groups over gRPC against a real server: delivery on time (never
//! early), fan-out across groups, competing members, credits, nack and
//! timeout redelivery with backoff, dead letters (after timeouts, nacks or
//! members leaving) and redrive, late
//! subscribers, cancel, seek, topic isolation and frozen members dropped.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chronos_proto::v1::{
    CancelRequest, DeadLetter, DescribeGroupRequest, GroupInfo, ListDeadLettersRequest,
    RedriveDeadLettersRequest, SeekGroupRequest,
};
use common::{event, now_ms, publish_ok, subscribe_req, Member, Server};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing more arrives" is watched for, once the server is known
/// to have everything it could deliver.
const QUIET: Duration = Duration::from_millis(300);

fn at(topic: &str, id: &str, schedule_ts: i64) -> chronos_proto::v1::Event {
    chronos_proto::v1::Event {
        schedule_ts,
        ..event(topic, id, b"x")
    }
}

async fn describe(server: &Server, group: &str, topic: &str) -> GroupInfo {
    let req = DescribeGroupRequest {
        consumer_group: group.into(),
        topic: topic.into(),
    };
    let resp = server.admin().await.describe_group(req).await;
    resp.expect("describe").into_inner().group.expect("group")
}

/// Waits until the group exists and its description satisfies `ok`.
async fn wait_group(server: &Server, group: &str, topic: &str, ok: impl Fn(&GroupInfo) -> bool) {
    let until = Instant::now() + WAIT;
    loop {
        let req = DescribeGroupRequest {
            consumer_group: group.into(),
            topic: topic.into(),
        };
        let info = match server.admin().await.describe_group(req).await {
            Ok(r) => r.into_inner().group,
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => panic!("describe: {s:?}"),
        };
        if info.as_ref().is_some_and(&ok) {
            return;
        }
        assert!(Instant::now() < until, "group never got there: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until group `g` of `t` holds one dead letter and nothing in flight;
/// then `m`, its member, gets nothing more.
async fn one_dead_letter_not_delivered(server: &Server, m: &mut Member) {
    wait_group(server, "g", "t", |g| g.dead_letters == 1 && g.inflight == 0).await;
    let after = m.next_within(QUIET).await;
    assert_eq!(after, None, "a dead letter is not delivered");
}

async fn dead_letters(server: &Server, group: &str, topic: &str) -> Vec<DeadLetter> {
    let req = ListDeadLettersRequest {
        consumer_group: group.into(),
        topic: topic.into(),
        limit: 0,
    };
    let resp = server.admin().await.list_dead_letters(req).await;
    resp.expect("list dead letters").into_inner().dead_letters
}

/// Receives until `n` distinct message ids arrived; acks each one.
async fn take_acking(m: &mut Member, n: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    while ids.len() < n {
        let d = m.next(WAIT).await;
        m.ack(&[&d.delivery_id]).await;
        ids.insert(d.event.unwrap().message_id);
    }
    ids
}

#[tokio::test]
async fn events_are_delivered_when_due_never_before() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut m = Member::join(&server, subscribe_req("g", "t", 100)).await;
    let mut c = server.events().await;
    let base = now_ms() + 600;
    // Published in reverse due order, across partitions.
    let events: Vec<_> = (0..20)
        .rev()
        .map(|i| at("t", &format!("e{i}"), base + i * 50))
        .collect();
    publish_ok(&mut c, events).await;
    let mut order = Vec::new();
    for _ in 0..20 {
        let d = m.next(WAIT).await;
        let received = now_ms();
        let ev = d.event.clone().unwrap();
        assert!(
            received >= ev.schedule_ts,
            "{} arrived {} ms early",
            ev.message_id,
            ev.schedule_ts - received
        );
        assert!(
            received - ev.schedule_ts < 1_000,
            "{} arrived {} ms late",
            ev.message_id,
            received - ev.schedule_ts
        );
        assert_eq!(d.due_ts, ev.schedule_ts);
        assert_eq!(d.attempt, 1);
        order.push(ev.schedule_ts);
        m.ack(&[&d.delivery_id]).await;
    }
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "delivered in due order");
    assert_eq!(m.next_within(QUIET).await, None, "each event once");
}

#[tokio::test]
async fn every_group_gets_every_event_and_only_its_topic() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut a1 = Member::join(&server, subscribe_req("ga", "A", 1000)).await;
    let mut a2 = Member::join(&server, subscribe_req("gb", "A", 1000)).await;
    let mut b = Member::join(&server, subscribe_req("ga", "B", 1000)).await;
    let mut c = server.events().await;
    let on_a: Vec<_> = (0..50).map(|i| event("A", &format!("a{i}"), b"")).collect();
    let on_b: Vec<_> = (0..30).map(|i| event("B", &format!("b{i}"), b"")).collect();
    publish_ok(&mut c, on_a).await;
    publish_ok(&mut c, on_b).await;
    let want_a: BTreeSet<String> = (0..50).map(|i| format!("a{i}")).collect();
    let want_b: BTreeSet<String> = (0..30).map(|i| format!("b{i}")).collect();
    assert_eq!(take_acking(&mut a1, 50).await, want_a);
    assert_eq!(take_acking(&mut a2, 50).await, want_a);
    assert_eq!(take_acking(&mut b, 30).await, want_b);
    for m in [&mut a1, &mut a2, &mut b] {
        assert_eq!(
            m.next_within(QUIET).await,
            None,
            "nothing else for {}",
            m.group
        );
    }
}

#[tokio::test]
async fn members_of_a_group_split_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut m1 = Member::join(&server, subscribe_req("g", "t", 5)).await;
    let mut m2 = Member::join(&server, subscribe_req("g", "t", 5)).await;
    let mut c = server.events().await;
    publish_ok(
        &mut c,
        (0..200)
            .map(|i| event("t", &format!("e{i}"), b""))
            .collect(),
    )
    .await;
    let mut got: BTreeMap<String, u32> = BTreeMap::new();
    let (mut n1, mut n2) = (0, 0);
    let until = Instant::now() + WAIT;
    while got.len() < 200 {
        assert!(
            Instant::now() < until,
            "only {} of 200 delivered",
            got.len()
        );
        tokio::select! {
            Some(d) = async { m1.next_within(QUIET).await } => {
                n1 += 1;
                *got.entry(d.event.unwrap().message_id).or_default() += 1;
                m1.ack(&[&d.delivery_id]).await;
            }
            Some(d) = async { m2.next_within(QUIET).await } => {
                n2 += 1;
                *got.entry(d.event.unwrap().message_id).or_default() += 1;
                m2.ack(&[&d.delivery_id]).await;
            }
        }
    }
    assert!(
        got.values().all(|&n| n == 1),
        "an event went to both members"
    );
    assert!(n1 >= 20 && n2 >= 20, "work split {n1}/{n2}");
}

#[tokio::test]
async fn a_member_never_holds_more_than_its_max_inflight() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut m = Member::join(&server, subscribe_req("g", "t", 3)).await;
    let mut c = server.events().await;
    publish_ok(
        &mut c,
        (0..10).map(|i| event("t", &format!("e{i}"), b"")).collect(),
    )
    .await;
    let mut held = Vec::new();
    let mut received = 0;
    while received < 10 {
        // Once the server reports three in flight, nothing more may arrive.
        let expect_held = 3.min(10 - received + held.len());
        while held.len() < expect_held {
            held.push(m.next(WAIT).await.delivery_id);
            received += 1;
        }
        assert!(held.len() <= 3);
        wait_group(&server, "g", "t", |g| g.inflight == held.len() as u64).await;
        assert_eq!(
            m.next_within(QUIET).await,
            None,
            "a 4th delivery while holding 3"
        );
        let id = held.remove(0);
        assert_eq!(m.ack(&[&id]).await.acked, 1);
    }
    wait_group(&server, "g", "t", |g| g.lag == 0).await;
}

#[tokio::test]
async fn nacks_back_off_longer_each_time_then_dead_letter_and_redrive() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("CHRONOS_DELIVERY__BACKOFF_BASE", "300ms"),
        ("CHRONOS_DELIVERY__MAX_ATTEMPTS", "4"),
    ];
    let server = Server::start_with_env(&dir.path().join("data"), &[], &env);
    let mut m = Member::join(&server, subscribe_req("g", "t", 10)).await;
    // Another group takes the event and goes: caught up, no members.
    let mut other = Member::join(&server, subscribe_req("other", "t", 10)).await;
    let mut c = server.events().await;
    publish_ok(&mut c, vec![event("t", "e", b"payload")]).await;
    let d = other.next(WAIT).await;
    assert_eq!(other.ack(&[&d.delivery_id]).await.acked, 1);
    drop(other);
    let mut delays = Vec::new();
    let mut nacked_at = Instant::now();
    for attempt in 1..=4 {
        let d = m.next(WAIT).await;
        assert_eq!(d.attempt, attempt);
        if attempt > 1 {
            delays.push(nacked_at.elapsed().as_millis() as u64);
        }
        // The server takes its clock when the nack arrives, i.e. after this
        // (its reply comes only once the nack is durable, later still).
        nacked_at = Instant::now();
        let r = m.settle(&[&d.delivery_id], true, 0).await;
        assert_eq!((r.acked, r.nacked), (0, 1));
    }
    // Equal jitter: attempt k waits between half and all of 300ms·2^(k-1);
    // 2 ms of slack for the server's millisecond clock.
    assert!(
        delays[0] >= 148 && delays[1] >= 298 && delays[2] >= 598,
        "{delays:?}"
    );
    assert!(delays[2] > delays[0], "{delays:?}");
    one_dead_letter_not_delivered(&server, &mut m).await;

    let mut admin = server.admin().await;
    let list = |limit| ListDeadLettersRequest {
        consumer_group: "g".into(),
        topic: "t".into(),
        limit,
    };
    let dead = admin
        .list_dead_letters(list(0))
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 4);
    assert!(dead[0].reason.contains("nack"), "{}", dead[0].reason);
    assert_eq!(dead[0].event.as_ref().unwrap().payload.as_ref(), b"payload");

    let redrive = RedriveDeadLettersRequest {
        consumer_group: "g".into(),
        topic: "t".into(),
        message_ids: vec![],
    };
    let r = admin
        .redrive_dead_letters(redrive)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.redriven, 1);
    let d = m.next(WAIT).await;
    assert_eq!((d.event.unwrap().message_id.as_str(), d.attempt), ("e", 1));
    assert_eq!(m.ack(&[&d.delivery_id]).await.acked, 1);
    // The redriven copy is for `g` alone: the other group does not lag by it.
    wait_group(&server, "g", "t", |g| g.lag == 0 && g.inflight == 0).await;
    let other = describe(&server, "other", "t").await;
    assert_eq!(
        other.lag, 0,
        "another group's redriven copy counted: {other:?}"
    );
    let dead = admin
        .list_dead_letters(list(10))
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert!(dead.is_empty());
}

#[tokio::test]
async fn unacked_deliveries_time_out_and_go_to_the_dead_letter_queue() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("CHRONOS_DELIVERY__ACK_TIMEOUT", "300ms"),
        ("CHRONOS_DELIVERY__BACKOFF_BASE", "100ms"),
        ("CHRONOS_DELIVERY__MAX_ATTEMPTS", "2"),
    ];
    let server = Server::start_with_env(&dir.path().join("data"), &[], &env);
    let mut m = Member::join(&server, subscribe_req("g", "t", 10)).await;
    let mut c = server.events().await;
    publish_ok(&mut c, vec![event("t", "e", b"")]).await;
    let first = m.next(WAIT).await;
    let t1 = Instant::now();
    let second = m.next(WAIT).await;
    assert_eq!((first.attempt, second.attempt), (1, 2));
    assert!(
        t1.elapsed() >= Duration::from_millis(300),
        "redelivered before the ack timeout"
    );
    wait_group(&server, "g", "t", |g| g.dead_letters == 1).await;
    let late = m.ack(&[&second.delivery_id]).await;
    assert_eq!(
        late.unknown,
        vec![second.delivery_id.clone()],
        "a dead letter cannot be acked"
    );
    let dead = dead_letters(&server, "g", "t").await;
    assert!(dead[0].reason.contains("ack timeout"), "{dead:?}");
}

#[tokio::test]
async fn events_wait_for_a_group_with_no_member_connected() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    // The group exists (created by a subscribe), then its only member leaves.
    drop(Member::join(&server, subscribe_req("g", "t", 100)).await);
    wait_group(&server, "g", "t", |g| g.members == 0).await;
    let mut c = server.events().await;
    let due = now_ms() + 300;
    publish_ok(
        &mut c,
        (0..20).map(|i| at("t", &format!("e{i}"), due)).collect(),
    )
    .await;
    wait_group(&server, "g", "t", |g| g.lag == 20).await;
    let mut late = Member::join(&server, subscribe_req("g", "t", 100)).await;
    assert_eq!(take_acking(&mut late, 20).await.len(), 20);
    // A group created later from EARLIEST gets what fired before it existed.
    let mut earliest = subscribe_req("h", "t", 100);
    earliest.start = chronos_proto::v1::StartPosition::Earliest as i32;
    let mut h = Member::join(&server, earliest).await;
    assert_eq!(take_acking(&mut h, 20).await.len(), 20);
    // And a LATEST group does not.
    let mut latest = Member::join(&server, subscribe_req("k", "t", 100)).await;
    assert_eq!(latest.next_within(QUIET).await, None);
}

#[tokio::test]
async fn a_leaving_member_s_deliveries_go_to_another_member() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut m1 = Member::join(&server, subscribe_req("g", "t", 100)).await;
    let mut c = server.events().await;
    publish_ok(&mut c, vec![event("t", "e", b"")]).await;
    let d = m1.next(WAIT).await;
    let mut m2 = Member::join(&server, subscribe_req("g", "t", 100)).await;
    drop(m1);
    let again = m2.next(WAIT).await;
    assert_eq!(again.event.unwrap().message_id, "e");
    assert_eq!(again.attempt, 2);
    assert_ne!(again.delivery_id, d.delivery_id);
}

/// An event whose consumer crashes on it (leaves without an ack, every
/// time) goes to the dead-letter queue after `max_attempts`, rather than
/// round the group for ever.
#[tokio::test]
async fn an_event_every_member_leaves_unacked_dies_after_max_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("CHRONOS_DELIVERY__MAX_ATTEMPTS", "2")];
    let server = Server::start_with_env(&dir.path().join("data"), &[], &env);
    // The group exists before the event fires (it starts at the latest).
    let mut m = Member::join(&server, subscribe_req("g", "t", 10)).await;
    let mut c = server.events().await;
    publish_ok(&mut c, vec![event("t", "poison", b"")]).await;
    for attempt in 1..=2 {
        let d = m.next(WAIT).await;
        assert_eq!(
            (d.event.unwrap().message_id.as_str(), d.attempt),
            ("poison", attempt)
        );
        drop(m);
        m = Member::join(&server, subscribe_req("g", "t", 10)).await;
    }
    one_dead_letter_not_delivered(&server, &mut m).await;
    let dead = dead_letters(&server, "g", "t").await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .reason
            .contains("left without an ack, after 2 attempts"),
        "{dead:?}"
    );
}

#[tokio::test]
async fn a_cancelled_event_is_never_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut m = Member::join(&server, subscribe_req("g", "t", 100)).await;
    let mut c = server.events().await;
    let due = now_ms() + 800;
    publish_ok(&mut c, vec![at("t", "keep", due), at("t", "drop", due)]).await;
    let cancel = CancelRequest {
        topic: "t".into(),
        message_id: "drop".into(),
        key: String::new(),
    };
    c.cancel(cancel).await.expect("cancel");
    assert_eq!(m.next(WAIT).await.event.unwrap().message_id, "keep");
    wait_group(&server, "g", "t", |g| g.lag == 0).await;
    assert_eq!(m.next_within(QUIET).await, None);
}

#[tokio::test]
async fn seek_redelivers_from_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut m = Member::join(&server, subscribe_req("g", "t", 100)).await;
    let mut c = server.events().await;
    publish_ok(
        &mut c,
        (0..5)
            .map(|i| event("t", &format!("old{i}"), b""))
            .collect(),
    )
    .await;
    assert_eq!(take_acking(&mut m, 5).await.len(), 5);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mark = now_ms();
    publish_ok(
        &mut c,
        (0..5)
            .map(|i| event("t", &format!("new{i}"), b""))
            .collect(),
    )
    .await;
    assert_eq!(take_acking(&mut m, 5).await.len(), 5);
    let seek = SeekGroupRequest {
        consumer_group: "g".into(),
        topic: "t".into(),
        ts: mark,
    };
    server.admin().await.seek_group(seek).await.expect("seek");
    let again = take_acking(&mut m, 5).await;
    let want: BTreeSet<String> = (0..5).map(|i| format!("new{i}")).collect();
    assert_eq!(again, want, "events due from the seek time, again");
    assert_eq!(m.next_within(QUIET).await, None);
}

#[tokio::test]
async fn bad_consumer_input_is_rejected_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.events().await;
    let cases = [
        (subscribe_req("bad group", "t", 1), "consumer_group"),
        (subscribe_req("g", "", 1), "topic"),
        (subscribe_req("g", "t", 1_000_000), "max_inflight"),
        (
            chronos_proto::v1::SubscribeRequest {
                partition_id: Some(99),
                ..subscribe_req("g", "t", 1)
            },
            "partition_id",
        ),
        (
            chronos_proto::v1::SubscribeRequest {
                start: 7,
                ..subscribe_req("g", "t", 1)
            },
            "start",
        ),
    ];
    for (req, field) in cases {
        let s = c.subscribe(req).await.expect_err("refused");
        assert_eq!(s.code(), Code::InvalidArgument, "{field}: {s:?}");
        assert!(s.message().starts_with(field), "{field}: {}", s.message());
    }
    let mut m = Member::join(&server, subscribe_req("g", "t", 1)).await;
    let s = m.client.ack(chronos_proto::v1::AckRequest {
        consumer_group: "g".into(),
        items: vec![chronos_proto::v1::AckItem {
            delivery_id: "nonsense".into(),
            ..Default::default()
        }],
        wait: true,
    });
    let s = s.await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().starts_with("items[0].delivery_id"),
        "{}",
        s.message()
    );
    // Well-formed but never delivered: reported, not an error.
    let r = m.ack(&["0:t:12345:1"]).await;
    assert_eq!(r.unknown, vec!["0:t:12345:1".to_string()]);
    let mut admin = server.admin().await;
    let s = admin
        .describe_group(DescribeGroupRequest {
            consumer_group: "nope".into(),
            topic: "t".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
}

#[tokio::test]
async fn a_stalled_member_holds_up_neither_its_group_nor_other_groups() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    // Holds one delivery and never acks it.
    let mut stuck = Member::join(&server, subscribe_req("g", "t", 1)).await;
    let mut busy = Member::join(&server, subscribe_req("g", "t", 10)).await;
    let mut other = Member::join(&server, subscribe_req("h", "t", 10)).await;
    let mut c = server.events().await;
    publish_ok(
        &mut c,
        (0..50).map(|i| event("t", &format!("e{i}"), b"")).collect(),
    )
    .await;
    let held = stuck.next(WAIT).await.event.unwrap().message_id;
    let rest = take_acking(&mut busy, 49).await;
    assert!(!rest.contains(&held), "the held event went to both members");
    assert_eq!(take_acking(&mut other, 50).await.len(), 50);
    assert_eq!(
        stuck.next_within(QUIET).await,
        None,
        "past its max_inflight"
    );
}

#[tokio::test]
async fn a_consume_stream_that_half_closes_still_receives() {
    use chronos_proto::v1::{consume_request, consume_response, ConsumeRequest};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.events().await;
    // Only the subscribe, then the request side ends (as grpcurl does).
    let only_subscribe = ConsumeRequest {
        kind: Some(consume_request::Kind::Subscribe(subscribe_req(
            "g", "t", 10,
        ))),
    };
    let mut stream = c
        .consume(futures::stream::iter(vec![only_subscribe]))
        .await
        .expect("consume")
        .into_inner();
    wait_group(&server, "g", "t", |g| g.members == 1).await;
    publish_ok(&mut c, vec![event("t", "e", b"")]).await;
    let msg = tokio::time::timeout(WAIT, stream.message()).await;
    let kind = msg
        .expect("a delivery in time")
        .expect("stream")
        .expect("open");
    match kind.kind {
        Some(consume_response::Kind::Delivery(d)) => {
            assert_eq!(d.event.unwrap().message_id, "e")
        }
        other => panic!("expected a delivery, got {other:?}"),
    }
}

/// A member whose process is frozen (SIGSTOP: its kernel still answers TCP,
/// so the connection never breaks) stops answering HTTP/2 pings; the server
/// closes its connection within `client_ping_interval + client_ping_timeout`,
/// the member leaves, and what it held goes to the member still there —
/// not after the ack timeout (a minute here), and not to the frozen one again.
#[tokio::test]
async fn a_frozen_member_is_dropped_when_it_stops_answering_pings() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("CHRONOS_DELIVERY__ACK_TIMEOUT", "60s"),
        ("CHRONOS_DELIVERY__CLIENT_PING_INTERVAL", "500ms"),
        ("CHRONOS_DELIVERY__CLIENT_PING_TIMEOUT", "500ms"),
    ];
    let server = Server::start_with_env(&dir.path().join("data"), &[], &env);
    /// SIGKILL (which a stopped process gets too) however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let frozen = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_chronos"))
            .args(["subscribe", "--group", "g", "--max-inflight", "10", "t"])
            .args(["--addr", &server.endpoint()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn chronos subscribe"),
    );
    // The CLI's subscribe creates the group.
    wait_group(&server, "g", "t", |g| g.members == 1).await;
    let status = std::process::Command::new("kill")
        .args(["-STOP", &frozen.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -STOP");
    let mut c = server.events().await;
    publish_ok(
        &mut c,
        (0..5).map(|i| event("t", &format!("e{i}"), b"")).collect(),
    )
    .await;
    // The frozen member takes them (it has credit)...
    wait_group(&server, "g", "t", |g| g.inflight == 5).await;
    let mut alive = Member::join(&server, subscribe_req("g", "t", 10)).await;
    // ...and leaves once its pings go unanswered; the live member gets them.
    let got = take_acking(&mut alive, 5).await;
    assert_eq!(got.len(), 5, "{got:?}");
    wait_group(&server, "g", "t", |g| g.members == 1 && g.inflight == 0).await;
}
