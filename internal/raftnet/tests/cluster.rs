//! Three nodes in one process, each a voter of the same partitions' Raft groups,
//! talking over real gRPC on loopback: election, replication, fail-over.

mod common;

use std::time::{Duration, Instant};

use chronos_partition::{Partition, PartitionError};
use common::{cluster, event, leader_of, wait_for, Node};

const VOTERS: [u64; 3] = [1, 2, 3];
const ELECTION_LIMIT: Duration = Duration::from_secs(10);
const APPLY_LIMIT: Duration = Duration::from_secs(10);

fn node(nodes: &[Node], id: u64) -> &Node {
    nodes
        .iter()
        .find(|n| n.id == id)
        .expect("node ids come from VOTERS")
}

/// Publishes `count` events named `{prefix}-{i}` through `leader`'s partition
/// and checks their offsets continue at `first_offset`.
async fn publish(
    leader: &Node,
    partition: u32,
    prefix: &str,
    count: usize,
    first_offset: u64,
) -> anyhow::Result<()> {
    publish_sized(leader, partition, prefix, count, first_offset, 0).await
}

/// Like `publish`, with `payload_bytes` of payload per event (0: a short one).
async fn publish_sized(
    leader: &Node,
    partition: u32,
    prefix: &str,
    count: usize,
    first_offset: u64,
    payload_bytes: usize,
) -> anyhow::Result<()> {
    let events = (0..count)
        .map(|i| {
            let mut e = event("orders", &format!("{prefix}-{i}"));
            if payload_bytes > 0 {
                e.payload = bytes::Bytes::from(vec![b'p'; payload_bytes]);
            }
            e
        })
        .collect();
    let outcomes = leader.partition(partition).publish(events).await?;
    let offsets: Vec<u64> = outcomes.iter().map(|o| o.offset).collect();
    let want: Vec<u64> = (first_offset..first_offset + count as u64).collect();
    anyhow::ensure!(offsets == want, "offsets {offsets:?}, want {want:?}");
    anyhow::ensure!(outcomes.iter().all(|o| !o.duplicate));
    Ok(())
}

/// Checks that a publish through `partition` (not the leader) is refused at
/// once with `NotLeader` naming `leader`.
async fn refused_naming(partition: &Partition, leader: u64) -> anyhow::Result<()> {
    let publish = partition.publish(vec![event("orders", "refused")]);
    match tokio::time::timeout(Duration::from_secs(5), publish).await? {
        Err(PartitionError::NotLeader {
            partition: id,
            leader: hint,
        }) => {
            anyhow::ensure!(id == partition.id(), "error names partition {id}");
            anyhow::ensure!(hint == Some(leader), "hint {hint:?}, want {leader}");
            Ok(())
        }
        other => anyhow::bail!("publish on node that does not lead: {other:?}"),
    }
}

/// Waits until every node in `nodes` applied `partition` up to `leader`'s
/// applied index and next offset `next_offset`.
async fn applied_everywhere(
    nodes: &[&Node],
    leader: &Node,
    partition: u32,
    next_offset: u64,
) -> anyhow::Result<()> {
    let index = leader.partition(partition).status().applied_index;
    wait_for("followers to apply", APPLY_LIMIT, || async move {
        nodes
            .iter()
            .all(|n| {
                let s = n.partition(partition).status();
                s.applied_index >= index && s.next_offset == next_offset
            })
            .then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_voters_replicate_and_fail_over() -> anyhow::Result<()> {
    let mut nodes = cluster(&VOTERS, 2).await?;

    let started = Instant::now();
    let all: Vec<&Node> = nodes.iter().collect();
    let leader0 = leader_of(&all, 0, ELECTION_LIMIT).await?;
    let leader1 = leader_of(&all, 1, ELECTION_LIMIT).await?;
    eprintln!(
        "leaders elected in {:?}: partition 0 -> node {leader0}, partition 1 -> node {leader1}",
        started.elapsed()
    );
    for n in &nodes {
        let voters = n.partition(0).status().voters;
        anyhow::ensure!(voters == VOTERS, "node {} sees voters {voters:?}", n.id);
    }

    publish(node(&nodes, leader0), 0, "a", 100, 0).await?;
    publish(node(&nodes, leader1), 1, "b", 5, 0).await?;
    applied_everywhere(&all, node(&nodes, leader0), 0, 100).await?;
    applied_everywhere(&all, node(&nodes, leader1), 1, 5).await?;

    // A follower refuses at once, naming the leader.
    let follower = nodes.iter().find(|n| n.id != leader0).expect("three nodes");
    refused_naming(follower.partition(0), leader0).await?;

    // The leader of partition 0 goes away: its partitions and its server.
    let gone = nodes
        .iter()
        .position(|n| n.id == leader0)
        .expect("leader is a node");
    let mut old = nodes.remove(gone);
    let stopped = Instant::now();
    old.stop().await;
    let rest: Vec<&Node> = nodes.iter().collect();
    let new_leader = leader_of(&rest, 0, ELECTION_LIMIT).await?;
    eprintln!(
        "partition 0: node {new_leader} leads {:?} after node {leader0} stopped",
        stopped.elapsed()
    );
    anyhow::ensure!(new_leader != leader0);
    let leader1 = leader_of(&rest, 1, ELECTION_LIMIT).await?;

    // Offsets continue where the old leader left them.
    publish(node(&nodes, new_leader), 0, "c", 10, 100).await?;
    publish(node(&nodes, leader1), 1, "d", 5, 5).await?;
    applied_everywhere(&rest, node(&nodes, new_leader), 0, 110).await?;
    applied_everywhere(&rest, node(&nodes, leader1), 1, 10).await?;

    for n in &mut nodes {
        n.stop().await;
    }
    Ok(())
}

/// A leader that stops sending heartbeats loses its followers; once it hears
/// the new term it steps down, stops taking writes and points at the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_steps_down_stops_leading() -> anyhow::Result<()> {
    let mut nodes = cluster(&VOTERS, 1).await?;
    let all: Vec<&Node> = nodes.iter().collect();
    let old = leader_of(&all, 0, ELECTION_LIMIT).await?;
    publish(node(&nodes, old), 0, "a", 3, 0).await?;

    let old_partition = node(&nodes, old).partition(0);
    old_partition.raft().runtime_config().heartbeat(false);
    let silenced = Instant::now();
    let new = wait_for("another node to lead", ELECTION_LIMIT, || async move {
        let s = old_partition.status();
        s.leader.filter(|&l| l != old && !s.is_leader)
    })
    .await?;
    let stepped_down = silenced.elapsed();
    // The owner's leader term (firing, delivery) ends with it.
    wait_for(
        "the old leader's flag to fall",
        Duration::from_secs(1),
        || async move { (!old_partition.is_leading()).then_some(()) },
    )
    .await?;
    eprintln!(
        "node {old} stepped down {stepped_down:?} after its heartbeats stopped; node {new} leads"
    );

    refused_naming(old_partition, new).await?;
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = leader_of(&all, 0, ELECTION_LIMIT).await?;
    publish(node(&nodes, leader), 0, "b", 3, 3).await?;
    applied_everywhere(&all, node(&nodes, leader), 0, 6).await?;

    for n in &mut nodes {
        n.stop().await;
    }
    Ok(())
}

/// A follower that missed several MB of entries gets them in append-entries
/// requests cut to the transport's byte budget, and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_follower_catches_up_in_bounded_requests() -> anyhow::Result<()> {
    let mut nodes = cluster(&VOTERS, 1).await?;
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = leader_of(&all, 0, ELECTION_LIMIT).await?;
    let lagging = nodes
        .iter()
        .position(|n| n.id != leader)
        .expect("three nodes");
    nodes[lagging].server.stop().await;

    // Eight entries of ~1 MB each: more than two append-entries requests' worth.
    const BATCHES: u64 = 8;
    const EVENTS: u64 = 1000;
    for b in 0..BATCHES {
        let prefix = format!("big{b}");
        publish_sized(
            node(&nodes, leader),
            0,
            &prefix,
            EVENTS as usize,
            b * EVENTS,
            1000,
        )
        .await?;
    }
    let behind = nodes[lagging].partition(0).status().next_offset;
    anyhow::ensure!(
        behind < BATCHES * EVENTS,
        "the follower could not have applied these yet"
    );

    nodes[lagging].restart_server().await?;
    let back = Instant::now();
    let all: Vec<&Node> = nodes.iter().collect();
    applied_everywhere(&all, node(&nodes, leader), 0, BATCHES * EVENTS).await?;
    eprintln!("follower caught up on ~8 MB in {:?}", back.elapsed());

    for n in &mut nodes {
        n.stop().await;
    }
    Ok(())
}
