//! A leader cut off from the other nodes, or paused (SIGSTOP) past the
//! election timeout, stops delivering within its lease: another node takes
//! over, and the old leader delivers nothing beside it, not even the
//! redeliveries that came due meanwhile.

mod common;

use std::time::{Duration, Instant};

use chronos_proto::v1::Delivery;
use common::cluster::{Cluster, Options};
use common::{event, publish_ok, subscribe_req, Member};

const EVENTS: usize = 20;

fn options() -> Options {
    Options {
        partitions: 1,
        proxied: true,
        // Unacked deliveries come due again within about a second.
        extra_toml:
            "[delivery]\nack_timeout = \"1s\"\nbackoff_base = \"100ms\"\nbackoff_max = \"200ms\"\n"
                .into(),
        ..Options::default()
    }
}

/// Node 1 leads the only partition and has delivered `EVENTS` events, none
/// acked, to a member subscribed on node 1 itself.
async fn leader_with_unacked_member(cluster: &mut Cluster) -> Member {
    cluster.make_leader(1, 0).await;
    let mut member = Member::join(cluster.node(1), subscribe_req("g", "lease", 100)).await;
    let mut client = cluster.node(1).events().await;
    let events = (0..EVENTS)
        .map(|i| event("lease", &format!("e{i}"), b"p"))
        .collect();
    publish_ok(&mut client, events).await;
    for _ in 0..EVENTS {
        let d = member.next(Duration::from_secs(10)).await;
        assert_eq!(d.attempt, 1, "{d:?}");
    }
    member
}

/// What reaches `member` from `from` until `until` (an error ends the stream).
async fn received(member: &mut Member, until: Instant) -> Vec<(Instant, Delivery)> {
    let mut got = Vec::new();
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, member.stream.message()).await {
            Ok(Ok(Some(d))) => got.push((Instant::now(), d)),
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_stops_delivering_within_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), options());
    let mut member = leader_with_unacked_member(&mut cluster).await;
    let cut = Instant::now();
    cluster.isolate(1);
    // Redeliveries come due about 1 s after the first deliveries; the lease
    // (270 ms) is long over by then.
    let got = received(&mut member, cut + Duration::from_secs(4)).await;
    let late: Vec<_> = got
        .iter()
        .filter(|(at, _)| at.duration_since(cut) > Duration::from_millis(600))
        .map(|(at, d)| (at.duration_since(cut), d.delivery_id.clone()))
        .collect();
    assert!(late.is_empty(), "the cut-off leader delivered: {late:?}");
    let leader = cluster
        .leader_of(2, 0, &[2, 3], Duration::from_secs(15))
        .await;
    assert_ne!(leader, 1);
    cluster.heal();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_delivers_nothing_when_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), options());
    let mut member = leader_with_unacked_member(&mut cluster).await;
    // Cut off as it pauses, so it wakes without word of the new leader
    // (nothing buffered on its sockets): only its lease keeps it from
    // acting on the redeliveries that came due while it slept.
    cluster.isolate(1);
    cluster.node(1).signal("STOP");
    let leader = cluster
        .leader_of(2, 0, &[2, 3], Duration::from_secs(15))
        .await;
    assert_ne!(leader, 1);
    // Paused well past the ack timeout: its redeliveries are all due.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.node(1).signal("CONT");
    let resumed = Instant::now();
    let got = received(&mut member, resumed + Duration::from_secs(3)).await;
    let ids: Vec<_> = got.iter().map(|(_, d)| d.delivery_id.clone()).collect();
    assert!(ids.is_empty(), "the resumed old leader delivered: {ids:?}");
    // Reconnected, it follows the new leader.
    cluster.heal();
    let now_led_by = cluster
        .leader_of(1, 0, &[2, 3], Duration::from_secs(15))
        .await;
    assert_eq!(now_led_by, leader);
}

/// A node that stops leading a partition stops reporting its groups: their
/// series leave its /metrics while the new leader reports them, so a sum
/// over the nodes counts each group once (and an alert on lag does not stay
/// on at a node that led the partition before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_reports_its_groups_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), options());
    let member = leader_with_unacked_member(&mut cluster).await;
    let deadline = Duration::from_secs(15);
    let inflight = "chronos_group_inflight";
    cluster
        .node(1)
        .wait_metric(inflight, EVENTS as f64, deadline)
        .await;
    cluster.isolate(1);
    let leader = cluster.leader_of(2, 0, &[2, 3], deadline).await;
    cluster.heal();
    cluster.leader_of(1, 0, &[leader], deadline).await;
    // The new leader holds the unacked deliveries (waiting to be redelivered).
    cluster
        .node(leader)
        .wait_metric(inflight, EVENTS as f64, deadline)
        .await;
    let until = Instant::now() + deadline;
    while cluster.node(1).metric(inflight) != 0.0 {
        assert!(
            Instant::now() < until,
            "node 1 still reports {} in flight after it stopped leading\n{}",
            cluster.node(1).metric(inflight),
            cluster.log(1)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cluster.node(1).metric("chronos_group_lag"), 0.0);
    drop(member);
}
