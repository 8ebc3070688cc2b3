//! Live membership: a fourth node joins a running three-node cluster and a
//! node leaves it, under steady publish and consume load. Replicas move by
//! Raft membership changes; no publish fails, every acknowledged event
//! reaches every group, none early. Bad membership commands are refused
//! with the field named.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chronos_proto::v1::{AddNodeRequest, ClusterStatusResponse, RemoveNodeRequest};
use common::cluster::{Cluster, Options};
use common::load::Load;
use common::seen::{assert_none_early, collect, wait_all};
use common::START_DEADLINE;
use tonic::Code;

const PUBLISHERS: usize = 2;
const PARTITIONS: u32 = 8;

/// Waits until node `via`'s status satisfies `done`; the last status.
async fn wait_status(
    cluster: &Cluster,
    via: u64,
    what: &str,
    deadline: Duration,
    done: impl Fn(&ClusterStatusResponse) -> bool,
) -> ClusterStatusResponse {
    let until = Instant::now() + deadline;
    loop {
        let status = cluster.status(via).await;
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < until,
            "{what}: not within {deadline:?}; moves {:?}; voters {:?}; nodes {:?}\nnode 1 log tail:\n{}",
            status.moves,
            status
                .partitions
                .iter()
                .map(|p| (p.partition, p.voters.clone(), p.learners.clone(), p.leader))
                .collect::<Vec<_>>(),
            status.nodes.iter().map(|n| (n.id, n.state.clone())).collect::<Vec<_>>(),
            tail(&cluster.log(1), 40),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Every partition has exactly `nodes` as the union of its voters, three
/// voters each, no learners, and nothing is moving.
fn settled_on(s: &ClusterStatusResponse, nodes: &[u64]) -> bool {
    let used: BTreeSet<u64> = s.partitions.iter().flat_map(|p| p.voters.clone()).collect();
    s.moves.is_empty()
        && s.partitions.len() == PARTITIONS as usize
        && s.partitions
            .iter()
            .all(|p| p.voters.len() == 3 && p.learners.is_empty() && p.leader.is_some())
        // Every voter holds the log (a new one is not promoted empty).
        && s.partitions.iter().all(|p| {
            p.replicas.len() == 2 && p.replicas.iter().all(|r| r.matched_index > 0 && r.lag <= 256)
        })
        && used == nodes.iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_and_another_leaves_under_load_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        nodes: 4,
        partitions: PARTITIONS,
        joiners: vec![4],
        ..Options::default()
    };
    let mut cluster = Cluster::start_only(dir.path(), opts, &[1, 2, 3, 4]);
    cluster.wait_ready_all();
    let before = wait_status(&cluster, 1, "the roster", START_DEADLINE, |s| {
        s.roster_version > 0 && s.nodes.len() == 3
    })
    .await;
    assert!(before.nodes.iter().all(|n| n.state == "active"));

    // Clients know nodes 1 and 3 only: node 2 leaves, node 4 is new.
    let endpoints: Vec<String> = [1, 3].iter().map(|&n| cluster.endpoint(n)).collect();
    let (seen_a, consumer_a) = collect(endpoints.clone(), "a", "moves", 200).await;
    let (seen_b, consumer_b) = collect(endpoints.clone(), "b", "moves", 200).await;
    let t0 = Instant::now();
    let load = Load::start(&endpoints, "moves", PUBLISHERS).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Grow 3 -> 4.
    let mut admin = cluster.admin(1).await;
    let add = AddNodeRequest {
        node_id: 4,
        raft_addr: cluster.raft_addr(4),
        api_addr: cluster
            .endpoint(4)
            .trim_start_matches("http://")
            .to_string(),
    };
    let added = admin
        .add_node(add.clone())
        .await
        .expect("add node 4")
        .into_inner();
    assert_eq!(
        added.nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    // Adding it again is a no-op; with other addresses it is refused.
    cluster
        .admin(3)
        .await
        .add_node(add.clone())
        .await
        .expect("add again");
    let moved = AddNodeRequest {
        raft_addr: "127.0.0.1:1".into(),
        ..add.clone()
    };
    let err = admin.add_node(moved).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().starts_with("node_id:"), "{err:?}");
    let bad = AddNodeRequest {
        node_id: 5,
        raft_addr: "nowhere".into(),
        ..add.clone()
    };
    let err = admin.add_node(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("raft_addr:"), "{err:?}");

    let grow = Instant::now();
    wait_status(
        &cluster,
        1,
        "grow to 4 nodes",
        Duration::from_secs(120),
        |s| settled_on(s, &[1, 2, 3, 4]),
    )
    .await;
    // Node 1 probes the new node's clock too.
    wait_status(
        &cluster,
        1,
        "node 4's clock offset",
        Duration::from_secs(10),
        |s| {
            s.nodes
                .iter()
                .any(|n| n.id == 4 && n.clock_offset_ms.is_some())
        },
    )
    .await;
    let grew_in = grow.elapsed();
    eprintln!("{:?}: grew to 4 nodes in {grew_in:?}", t0.elapsed());

    // Shrink 4 -> 3: node 2 leaves.
    let err = admin
        .remove_node(RemoveNodeRequest { node_id: 9 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let removing = admin
        .remove_node(RemoveNodeRequest { node_id: 2 })
        .await
        .expect("remove node 2")
        .into_inner();
    let state_of_2 = removing
        .nodes
        .iter()
        .find(|n| n.id == 2)
        .map(|n| n.state.clone());
    assert_eq!(state_of_2.as_deref(), Some("leaving"));
    // A second removal would leave two nodes for three copies.
    let err = admin
        .remove_node(RemoveNodeRequest { node_id: 3 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("replication_factor"), "{err:?}");

    let shrink = Instant::now();
    wait_status(
        &cluster,
        1,
        "shrink to 3 nodes",
        Duration::from_secs(120),
        |s| {
            settled_on(s, &[1, 3, 4])
                && s.nodes.iter().map(|n| n.id).collect::<Vec<_>>() == [1, 3, 4]
        },
    )
    .await;
    let shrank_in = shrink.elapsed();
    eprintln!("{:?}: shrank to 3 nodes in {shrank_in:?}", t0.elapsed());
    // It holds nothing now: it stops, and the cluster goes on without it.
    let status = cluster.terminate(2, Duration::from_secs(20));
    assert!(status.success(), "node 2 exited with {status}");
    let dirs: Vec<String> = std::fs::read_dir(cluster.data_dir(2))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("partition-"))
        .collect();
    assert!(dirs.is_empty(), "node 2 still holds {dirs:?}");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let published = load.stop().await;
    let want = published.checked();
    for (group, seen) in [("a", &seen_a), ("b", &seen_b)] {
        wait_all(seen, want, Duration::from_secs(60), || {
            format!("group {group}; node 1 log:\n{}", tail(&cluster.log(1), 40))
        })
        .await;
        assert_none_early(seen, want);
    }
    consumer_a.abort();
    consumer_b.abort();

    let q = |f| published.quantile(f);
    eprintln!(
        "membership: grew in {grew_in:?}, shrank in {shrank_in:?}; {} publishes, latency p50 {:?} p99 {:?} max {:?}",
        published.latencies.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
}
