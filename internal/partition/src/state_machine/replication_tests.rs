//! openraft itself ships and installs a snapshot between real storages: a
//! leader whose log is purged behind a snapshot catches up a wiped node and a
//! follower that fell behind, over an in-process network (openraft's chunked
//! snapshot transport, our log store and state machine, real WAL and RocksDB).
//! The gRPC transport is not involved; it only carries the same requests.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chronos_proto::internal::{EventRecord, PublishCommand};
use chronos_raftlog::{RaftLog, RaftLogOptions};
use chronos_store::{Store, StoreResources};

use crate::history::History;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{BasicNode, SnapshotPolicy};
use prost::Message;

use super::{AppliedState, StateMachine};
use crate::log_store::LogStore;
use crate::test_net::Router;
use crate::types::{Command, NodeId, Raft};

/// The state machines' dedup window (the node default).
const DEDUP_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

const DEADLINE: Duration = Duration::from_secs(30);

struct Node {
    raft: Raft,
    store: Store,
    log: Arc<RaftLog>,
    history: History,
    applied: Arc<AppliedState>,
}

impl Node {
    /// First index of the node's Raft log.
    fn log_first(&self) -> Option<u64> {
        self.log.range(0).map(|(first, _)| first)
    }
}

async fn start(id: NodeId, dir: &Path, router: &Router) -> Node {
    let log = Arc::new(RaftLog::open(&dir.join("raftlog"), RaftLogOptions::default()).unwrap());
    let history = History::open(0, &dir.join("wal"), 256 << 20).unwrap();
    let start = Instant::now();
    // A node just shut down may still hold its RocksDB for a moment.
    let store = loop {
        match Store::open(&dir.join("state"), &StoreResources::new(8 << 20, 32 << 20)) {
            Ok(store) => break store,
            Err(e) => {
                assert!(start.elapsed() < DEADLINE, "opening node {id}'s store: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let log_store = LogStore::open(log.clone(), 0, history.clone()).unwrap();
    let sm = StateMachine::open(store.clone(), history.clone(), dir, DEDUP_TTL_MS).unwrap();
    let applied = sm.applied_state();
    let config = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        // Several chunks per snapshot.
        snapshot_max_chunk_size: 16 << 10,
        ..Default::default()
    };
    let raft = Raft::new(
        id,
        Arc::new(config.validate().unwrap()),
        router.node(id),
        log_store,
        sm,
    )
    .await
    .unwrap();
    router.add(id, raft.clone());
    Node {
        raft,
        store,
        log,
        history,
        applied,
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Proposes `entries` publishes of 20 events each (half due now: fired at
/// once; half due in an hour: pending), numbering offsets from `*offset`.
async fn write(leader: &Raft, offset: &mut u64, entries: usize) {
    for _ in 0..entries {
        let now = crate::wall_ms();
        let events = (0..20)
            .map(|i| {
                let due_ts = if i % 2 == 0 { now } else { now + 3_600_000 };
                let record = EventRecord {
                    topic: format!("t{}", i % 3),
                    message_id: format!("m{}", *offset + i),
                    payload: Bytes::from(vec![7u8; 200]),
                    schedule_ts: due_ts,
                    due_ts,
                    ..Default::default()
                };
                Bytes::from(record.encode_to_vec())
            })
            .collect::<Vec<_>>();
        let cmd = Command::publish(PublishCommand {
            publish_ts: now,
            first_offset: *offset,
            dedup_expiry_ts: now + 3_600_000,
            has_reschedule: false,
            fire_seqs: Vec::new(),
            advances: Vec::new(),
            events,
        });
        *offset += 20;
        leader.client_write(cmd).await.unwrap();
    }
}

fn dump(store: &Store) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    Store::column_families()
        .iter()
        .map(|cf| store.dump_cf(cf).unwrap())
        .collect()
}

fn applied(node: &Node) -> u64 {
    node.applied
        .index
        .load(std::sync::atomic::Ordering::Acquire)
}

/// Snapshot on the leader and purge its whole log behind it.
async fn snapshot_and_purge(leader: &Node) -> u64 {
    let index = applied(leader);
    leader.raft.trigger().snapshot().await.unwrap();
    let mut m = leader.raft.metrics();
    m.wait_until(|m| m.snapshot.is_some_and(|s| s.index >= index))
        .await
        .unwrap();
    leader.raft.trigger().purge_log(index).await.unwrap();
    m.wait_until(|m| m.purged.is_some_and(|p| p.index >= index))
        .await
        .unwrap();
    index
}

async fn caught_up(follower: &Node, leader: &Node) {
    let target = applied(leader);
    wait_for("the follower to catch up", || applied(follower) >= target).await;
    wait_for("identical state", || {
        dump(&follower.store) == dump(&leader.store)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_and_a_lagging_one_catch_up_from_a_snapshot_plus_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |id: u64| tmp.path().join(format!("node-{id}"));
    let router = Router::default();
    let n1 = start(1, &dir(1), &router).await;
    n1.raft
        .initialize(BTreeMap::from([(1, BasicNode::default())]))
        .await
        .unwrap();
    n1.raft
        .wait(Some(DEADLINE))
        .current_leader(1, "n1 leads")
        .await
        .unwrap();
    let mut offset = 0;
    write(&n1.raft, &mut offset, 30).await;

    // Node 3 follows from the start, then goes down and falls behind.
    let n3 = start(3, &dir(3), &router).await;
    n1.raft
        .add_learner(3, BasicNode::default(), true)
        .await
        .unwrap();
    caught_up(&n3, &n1).await;
    router.remove(3);
    n3.raft.shutdown().await.unwrap();
    let n3_last = n3.log.range(0).unwrap().1;
    drop(n3);

    write(&n1.raft, &mut offset, 40).await;
    let snapshot_index = snapshot_and_purge(&n1).await;
    write(&n1.raft, &mut offset, 10).await;
    assert!(snapshot_index > n3_last + 10);

    // Node 2 is new (or wiped): a snapshot, then the log after it.
    let n2 = start(2, &dir(2), &router).await;
    n1.raft
        .add_learner(2, BasicNode::default(), true)
        .await
        .unwrap();
    caught_up(&n2, &n1).await;
    assert_eq!(n2.log_first(), Some(snapshot_index + 1));
    assert_eq!(
        n2.history.wal().first_index(),
        Some(snapshot_index + 1),
        "the history starts after the snapshot"
    );
    let m = n2.raft.metrics().borrow_watched().clone();
    assert_eq!(m.snapshot.map(|s| s.index), Some(snapshot_index));

    // Node 3 comes back: its log ends long before the leader's purge point.
    let n3 = start(3, &dir(3), &router).await;
    caught_up(&n3, &n1).await;
    assert_eq!(n3.log_first(), Some(snapshot_index + 1));
    write(&n1.raft, &mut offset, 5).await;
    caught_up(&n3, &n1).await;
    caught_up(&n2, &n1).await;

    // Both restart from what they stored (vote, purge point, log after the
    // snapshot) and keep following.
    for (id, node) in [(2, n2), (3, n3)] {
        router.remove(id);
        node.raft.shutdown().await.unwrap();
        drop(node);
        let node = start(id, &dir(id), &router).await;
        // The first metrics come once the core runs.
        let m = node
            .raft
            .wait(Some(DEADLINE))
            .metrics(|m| m.purged.is_some(), "loaded state")
            .await
            .unwrap();
        assert_eq!(m.purged.map(|p| p.index), Some(snapshot_index), "node {id}");
        assert!(m.last_log_index >= Some(snapshot_index + 10), "node {id}");
        assert_eq!(node.log_first(), Some(snapshot_index + 1), "node {id}");
        write(&n1.raft, &mut offset, 3).await;
        caught_up(&node, &n1).await;
        node.raft.shutdown().await.unwrap();
    }
    n1.raft.shutdown().await.unwrap();
}
