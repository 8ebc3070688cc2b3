//! When a leader's owner wakes for Raft's metrics: openraft reports them at
//! every tick and heartbeat round, and a leased leader with other voters
//! reads its lease when it acts instead of following every report.

use std::time::{Duration, Instant};

use super::tests::{cluster, next_delivery, retrying, settled};
use crate::state_machine::tests::{event, wait_for};
use crate::test_net::Router;
use crate::{wall_ms, Member, Start, Terms};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_leader_of_three_voters_rests_between_its_acts() {
    let tmp = tempfile::tempdir().unwrap();
    let router = Router::default();
    let nodes = cluster(tmp.path(), &router).await;
    let l = settled(&nodes).await;
    let p = &nodes[&l];
    wait_for("the leader's term", || p.is_leading()).await;

    // Raft reports every 20 ms (the ticks of 100 ms heartbeats) while it
    // leads; an owner following those reports never rests 500 ms.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut seen, mut since) = (p.metrics_observed(), Instant::now());
    while since.elapsed() < Duration::from_millis(500) {
        assert!(
            Instant::now() < deadline,
            "the leader's owner woke for Raft's metrics at least every 500 ms"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = p.metrics_observed();
        if now != seen {
            (seen, since) = (now, Instant::now());
        }
    }

    // Resting, it still acts on time: its lease is read when it fires.
    let (member, mut rx) = Member::new(Terms::window(10));
    p.attach("t".into(), "g".into(), Start::Latest, member)
        .await
        .unwrap();
    let due = wall_ms() + 300;
    retrying("publish", || p.publish(vec![event("t", "e".into(), due)])).await;
    let (_, attempt) = next_delivery(&mut rx).await;
    assert_eq!(attempt, 1);
    assert!(wall_ms() >= due, "delivered before its due time");
    for p in nodes.values() {
        p.shutdown().await;
    }
}
