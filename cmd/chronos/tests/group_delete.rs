//! DeleteGroup against a real server: refused while a member is subscribed,
//! then the group goes from every partition with its in-flight events and
//! dead letters, the fire log it pinned is trimmed, and a subscribe under
//! the same name makes a new group.

mod common;

use std::time::{Duration, Instant};

use chronos_proto::v1::{
    DeleteGroupRequest, DeleteGroupResponse, DescribeGroupRequest, ListDeadLettersRequest,
};
use common::{batch_req, event, subscribe_req, Member, Server};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

fn delete_req(group: &str, topic: &str) -> DeleteGroupRequest {
    DeleteGroupRequest {
        consumer_group: group.into(),
        topic: topic.into(),
    }
}

async fn delete(
    server: &Server,
    group: &str,
    topic: &str,
) -> Result<DeleteGroupResponse, tonic::Status> {
    let answer = server
        .admin()
        .await
        .delete_group(delete_req(group, topic))
        .await;
    answer.map(tonic::Response::into_inner)
}

/// Receives `n` deliveries, acking each.
/// Waits until `/metrics` lists `group`'s gauges (or no longer does).
async fn wait_listed(server: &Server, group: &str, listed: bool) {
    let until = Instant::now() + WAIT;
    loop {
        let (_, text) = server.http_get("/metrics").unwrap();
        let label = format!("group=\"{group}\"");
        let lines = |name: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
                .count()
        };
        let (lag, inflight) = (lines("chronos_group_lag"), lines("chronos_group_inflight"));
        if (lag > 0 && inflight > 0) == listed && (lag == 0 && inflight == 0) != listed {
            return;
        }
        assert!(
            Instant::now() < until,
            "{group} listed {lag} lag and {inflight} in-flight series, wanted listed: {listed}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drain(m: &mut Member, n: usize) {
    for _ in 0..n {
        let d = m.next(WAIT).await;
        m.ack(&[&d.delivery_id]).await;
    }
}

#[tokio::test]
async fn a_deleted_group_lets_its_fire_log_go_and_its_name_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("CHRONOS_WAL__RETENTION_AGE", "1s"),
        ("CHRONOS_WAL__RETENTION_CHECK_INTERVAL", "200ms"),
        ("CHRONOS_DELIVERY__MAX_ATTEMPTS", "2"),
    ];
    let server = Server::start_with_env(&dir.path().join("data"), &["--partitions", "2"], &env);
    let mut gone = Member::join(&server, subscribe_req("gone", "t", 1)).await;
    let mut kept = Member::join(&server, subscribe_req("kept", "t", 100)).await;
    let mut c = server.events().await;
    let events = (0..10).map(|i| event("t", &format!("e{i}"), b"")).collect();
    c.publish_batch(batch_req(events)).await.expect("publish");
    drain(&mut kept, 10).await;
    // "gone" nacks its first event twice (a dead letter: two attempts
    // allowed) and parks each other event it gets meanwhile for a minute.
    let mut parked = 0;
    let mut dying = None;
    loop {
        let d = gone.next(WAIT).await;
        let id = d.event.clone().unwrap().message_id;
        if d.attempt == 2 {
            gone.settle(&[&d.delivery_id], true, 0).await;
            break;
        }
        let delay = if dying.get_or_insert(id.clone()) == &id {
            1
        } else {
            60_000
        };
        parked += u64::from(delay > 1);
        gone.settle(&[&d.delivery_id], true, delay).await;
    }
    // One more it holds unacked (its only credit): it goes back when it leaves.
    let held = gone.next(WAIT).await;
    assert_eq!(held.attempt, 1);
    // /metrics lists its lag and in flight (refreshed every second)...
    wait_listed(&server, "gone", true).await;

    let refused = delete(&server, "gone", "t")
        .await
        .expect_err("a member is subscribed");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("must leave"), "{refused:?}");
    drop(gone);

    // Its member's leave reaches the partitions a moment after the stream ends.
    let until = Instant::now() + WAIT;
    let dropped = loop {
        match delete(&server, "gone", "t").await {
            Ok(d) => break d,
            Err(s) if s.code() == Code::FailedPrecondition && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("delete: {s:?}"),
        }
    };
    assert_eq!(
        (dropped.in_flight, dropped.dead_letters),
        (parked + 1, 1),
        "{dropped:?}"
    );

    let mut admin = server.admin().await;
    let describe = DescribeGroupRequest {
        consumer_group: "gone".into(),
        topic: "t".into(),
    };
    let gone_now = admin.describe_group(describe).await.expect_err("deleted");
    assert_eq!(gone_now.code(), Code::NotFound);
    let dlq = ListDeadLettersRequest {
        consumer_group: "gone".into(),
        topic: "t".into(),
        limit: 0,
    };
    assert_eq!(
        admin.list_dead_letters(dlq).await.unwrap_err().code(),
        Code::NotFound
    );
    let again = delete(&server, "gone", "t")
        .await
        .expect_err("deleted already");
    assert_eq!(again.code(), Code::NotFound, "{again:?}");
    // ...and, once deleted, lists it no more (not even at 0).
    wait_listed(&server, "gone", false).await;
    wait_listed(&server, "kept", true).await;

    // Nothing pins the fire log now: all ten go once past the retention age.
    server
        .wait_metric("chronos_fired_trimmed_total", 10.0, Duration::from_secs(10))
        .await;

    // The name makes a new group, at the latest position: only what fires next.
    let mut fresh = Member::join(&server, subscribe_req("gone", "t", 100)).await;
    c.publish_batch(batch_req(vec![event("t", "later", b"")]))
        .await
        .expect("publish");
    let d = fresh.next(WAIT).await;
    assert_eq!(
        (d.event.unwrap().message_id.as_str(), d.attempt),
        ("later", 1)
    );
    assert_eq!(fresh.next_within(Duration::from_millis(300)).await, None);
}

#[tokio::test]
async fn deleting_a_group_checks_its_input_and_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let bad = delete(&server, "", "t").await.expect_err("no group");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("consumer_group:"), "{bad:?}");
    let bad = delete(&server, "g", "no/such")
        .await
        .expect_err("bad topic");
    assert!(bad.message().starts_with("topic:"), "{bad:?}");
    let none = delete(&server, "g", "t").await.expect_err("no such group");
    assert_eq!(none.code(), Code::NotFound, "{none:?}");
}
