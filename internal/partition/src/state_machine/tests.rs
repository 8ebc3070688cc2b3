//! Shipping a snapshot between state machines on real storage: a partition
//! (state machine A) gets publishes, fires, a consumer group with deliveries
//! and acks, and a cancel; its snapshot is packed, streamed in chunks into
//! state machine B the way openraft's chunked transport does, and installed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chronos_proto::internal::{EventRecord, PublishCommand, TopicState};
use chronos_proto::v1::Event;
use chronos_raftlog::{RaftLog, RaftLogOptions};
use chronos_store::{Store, StoreResources};
use chronos_wal::Retention;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::EntryPayload;
use prost::Message;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::StateMachine;
use crate::snapshot::unpack;
use crate::types::{Command, Entry, SnapshotMeta};
use crate::{
    parse_delivery_id, DeliveryOptions, FiringOptions, Member, Outgoing, Partition,
    PartitionOptions, SettleItem, SettleOp, Start, Terms,
};

const DEADLINE: Duration = Duration::from_secs(30);
/// The state machines' dedup window (the node default).
const DEDUP_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// openraft's default `snapshot_max_chunk_size` is 3 MiB; smaller chunks
/// exercise more of the seek-and-write path.
const CHUNK_BYTES: usize = 64 << 10;

pub(crate) fn options(dir: &Path) -> PartitionOptions {
    PartitionOptions {
        id: 0,
        node_id: 1,
        voters: vec![1],
        join: false,
        dir: dir.to_path_buf(),
        raft_log: std::sync::Arc::new(
            RaftLog::open(&dir.join("raftlog"), RaftLogOptions::default()).unwrap(),
        ),
        history_segment_bytes: 256 << 20,
        retention: Retention {
            max_age: None,
            max_bytes: None,
        },
        retention_check_interval: Duration::from_secs(3600),
        group_commit_linger: Duration::from_millis(1),
        dedup_ttl: Duration::from_secs(3600),
        heartbeat_interval: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(150),
        election_timeout_max: Duration::from_millis(300),
        snapshot_every_entries: 1_000_000,
        firing: FiringOptions {
            tick_ms: 5,
            horizon_ms: 60_000,
            kept_bytes: 8 << 20,
        },
        delivery: DeliveryOptions {
            ack_timeout: Duration::from_secs(600),
            ..Default::default()
        },
        resources: StoreResources::new(8 << 20, 64 << 20),
        may_lead: tokio::sync::watch::channel(true).1,
        preferred_leader: None,
        handoffs: Default::default(),
        rebalance_after: Duration::from_secs(10),
        free_space: crate::FreeSpace::unchecked(),
    }
}

pub(crate) async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) fn event(topic: &str, id: String, due_ts: i64) -> Event {
    Event {
        message_id: id,
        schedule_ts: due_ts,
        payload: Bytes::from(vec![b'x'; 64]),
        topic: topic.into(),
        key: "k".into(),
        headers: Default::default(),
    }
}

pub(super) async fn publish_all(p: &Partition, topic: &str, tag: &str, n: usize, due_in_ms: i64) {
    let due = crate::wall_ms() + due_in_ms;
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let events = chunk
            .iter()
            .map(|i| event(topic, format!("{tag}-{i}"), due))
            .collect();
        p.publish(events).await.unwrap();
    }
}

/// Runs a partition at `dir` through `work`, then shuts it down and waits
/// until its RocksDB can be opened again.
pub(super) async fn with_partition<F>(dir: &Path, work: impl FnOnce(std::sync::Arc<Partition>) -> F)
where
    F: std::future::Future<Output = ()>,
{
    let p = std::sync::Arc::new(
        Partition::open(options(dir), crate::SoloNetwork)
            .await
            .unwrap(),
    );
    wait_for("the partition to lead", || p.is_ready()).await;
    work(p.clone()).await;
    p.shutdown().await;
    drop(p);
}

/// Opens the state machine of a partition directory (retrying while the
/// shut-down partition's tasks still hold its RocksDB).
pub(super) async fn open_sm(dir: &Path) -> (Store, StateMachine) {
    let start = Instant::now();
    let store = loop {
        match Store::open(&dir.join("state"), &StoreResources::new(8 << 20, 64 << 20)) {
            Ok(store) => break store,
            Err(e) if start.elapsed() < DEADLINE => {
                tracing::debug!("waiting for the store: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("opening {}: {e}", dir.display()),
        }
    };
    let history = crate::history::History::open(0, &dir.join("wal"), 256 << 20).unwrap();
    let sm = StateMachine::open(store.clone(), history, dir, DEDUP_TTL_MS).unwrap();
    (store, sm)
}

/// State machine A's partition: pending, fired (at publish and by the wheel),
/// a cancel, a group with acked and in-flight deliveries, a second topic.
async fn populate_a(dir: &Path, pending: usize) {
    with_partition(dir, |p| async move {
        publish_all(&p, "orders", "later", pending, 3_600_000).await;
        publish_all(&p, "orders", "now", 300, 0).await;
        publish_all(&p, "orders", "soon", 50, 200).await;
        publish_all(&p, "billing", "now", 100, 0).await;
        let cancelled = p.cancel("orders".into(), "later-7".into()).await.unwrap();
        assert!(matches!(cancelled, crate::CancelOutcome::Cancelled { .. }));
        let want_pending = pending as u64 - 1;
        wait_for("the soon events to fire", || {
            p.status().pending == want_pending
        })
        .await;

        let (member, mut outbox) = Member::new(Terms::window(100));
        p.attach("orders".into(), "g1".into(), Start::Earliest, member)
            .await
            .unwrap();
        let mut acks = Vec::new();
        while acks.len() < 100 {
            let got = tokio::time::timeout(DEADLINE, outbox.recv()).await.unwrap();
            let Some(Outgoing::Delivery(d)) = got else {
                panic!("member closed: {got:?}")
            };
            let (_, topic, seq, attempt) = parse_delivery_id(&d.delivery_id).unwrap();
            acks.push(SettleItem {
                topic,
                seq,
                attempt,
                op: SettleOp::Ack,
            });
        }
        acks.truncate(60);
        let settled = p.settle("g1".into(), acks, true).await.unwrap();
        assert!(settled.iter().all(|r| *r == crate::SettleResult::Acked));
        // The credits that came back let 60 more go out; their records
        // linger a while before they are proposed.
        for _ in 0..60 {
            tokio::time::timeout(DEADLINE, outbox.recv()).await.unwrap();
        }
        wait_for("the 60 deliveries recorded", || {
            p.store.scan_inflight().unwrap().len() == 100
        })
        .await;
    })
    .await;
}

/// B's older, different state: other topics and groups, fewer events.
async fn populate_b(dir: &Path) {
    with_partition(dir, |p| async move {
        publish_all(&p, "old-topic", "o", 400, 3_600_000).await;
        publish_all(&p, "orders", "b-now", 30, 0).await;
        let (member, mut outbox) = Member::new(Terms::window(5));
        p.attach("orders".into(), "old-group".into(), Start::Earliest, member)
            .await
            .unwrap();
        tokio::time::timeout(DEADLINE, outbox.recv()).await.unwrap();
    })
    .await;
}

/// Every column family's (key, value) pairs, by column family name.
type Dump = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

fn dump(store: &Store) -> Dump {
    Store::column_families()
        .iter()
        .map(|cf| (cf.to_string(), store.dump_cf(cf).unwrap()))
        .collect()
}

fn assert_same_state(a: &StateMachine, b: &StateMachine) {
    let (sa, sb) = (dump(&a.store), dump(&b.store));
    for ((cf, ka), (_, kb)) in sa.iter().zip(&sb) {
        assert_eq!(ka.len(), kb.len(), "{cf}: key count");
        assert!(ka == kb, "{cf}: contents differ");
    }
    assert_eq!(a.applied, b.applied);
    assert_eq!(a.membership, b.membership);
    assert_eq!(a.next_offset, b.next_offset);
    assert_eq!(a.pending, b.pending);
    let load = |s: &super::AppliedState| {
        use std::sync::atomic::Ordering::Acquire;
        (
            s.index.load(Acquire),
            s.next_offset.load(Acquire),
            s.pending.load(Acquire),
        )
    };
    assert_eq!(load(&a.shared), load(&b.shared));
}

/// A's current snapshot, built now and packed; with the pack's path.
async fn snapshot_of(a: &mut StateMachine) -> (SnapshotMeta, PathBuf) {
    let built = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let started = Instant::now();
    let (meta, path) = a.snapshots.packed().unwrap().unwrap();
    assert_eq!(meta, built.meta);
    eprintln!(
        "pack: {} bytes in {} ms",
        std::fs::metadata(&path).unwrap().len(),
        started.elapsed().as_millis()
    );
    (meta, path)
}

/// Writes `bytes` into B's receiving file the way openraft's chunked
/// transport does: per chunk, seek to its offset and write; shut down at the end.
async fn stream_into(b: &mut StateMachine, bytes: &[u8]) -> tokio::fs::File {
    use openraft_legacy::network_v1::SnapshotReceiverFactory;
    let mut file = b.begin_receiving_snapshot().await.unwrap();
    for (i, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
        file.seek(std::io::SeekFrom::Start((i * CHUNK_BYTES) as u64))
            .await
            .unwrap();
        file.write_all(chunk).await.unwrap();
    }
    file.shutdown().await.unwrap();
    file
}

/// A publish entry right after `sm`'s applied index, due now into `topic`.
pub(super) fn next_publish(sm: &StateMachine, topic: &str, id: &str) -> Entry {
    let applied = sm.applied.unwrap();
    let now = crate::wall_ms();
    let record = EventRecord {
        topic: topic.into(),
        message_id: id.into(),
        due_ts: now,
        schedule_ts: now,
        ..Default::default()
    };
    Entry {
        log_id: crate::codec::log_id(applied.leader_id.term, 1, applied.index + 1),
        payload: EntryPayload::Normal(Command::publish(PublishCommand {
            publish_ts: now,
            first_offset: sm.next_offset,
            events: vec![record.encode_to_vec().into()],
            dedup_expiry_ts: now + 60_000,
            has_reschedule: false,
            fire_seqs: Vec::new(),
            advances: Vec::new(),
        })),
    }
}

/// A (with `pending` events pending) and B (older, different data), both
/// shut down and reopened as bare state machines.
struct Pair {
    dir_b: PathBuf,
    a: StateMachine,
    store_b: Store,
    b: StateMachine,
}

async fn pair(tmp: &Path, pending: usize) -> Pair {
    let (dir_a, dir_b) = (tmp.join("a"), tmp.join("b"));
    populate_a(&dir_a, pending).await;
    populate_b(&dir_b).await;
    let (_, a) = open_sm(&dir_a).await;
    let (store_b, b) = open_sm(&dir_b).await;
    Pair {
        dir_b,
        a,
        store_b,
        b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_streamed_in_chunks_replaces_an_older_state() {
    let tmp = tempfile::tempdir().unwrap();
    let Pair {
        dir_b,
        mut a,
        store_b,
        mut b,
    } = pair(tmp.path(), 5_000).await;
    assert_eq!(a.pending, 4_999);
    let a_dump = dump(&a.store);
    let count = |cf: &str| a_dump.iter().find(|(n, _)| n == cf).unwrap().1.len();
    assert_eq!(count("fired"), 300 + 50 + 100);
    assert_eq!(
        (count("groups"), count("inflight")),
        (1, 100),
        "60 acked, 60 more sent"
    );
    assert!(b.applied.is_some());

    let (meta, pack) = snapshot_of(&mut a).await;
    let bytes = std::fs::read(&pack).unwrap();
    let file = stream_into(&mut b, &bytes).await;
    let woken = b.shared.notice.clone();
    let started = Instant::now();
    b.install_snapshot(&meta, file).await.unwrap();
    eprintln!(
        "install of {} pending events, {} bytes packed: {} ms",
        a.pending,
        bytes.len(),
        started.elapsed().as_millis()
    );
    assert_same_state(&a, &b);
    tokio::time::timeout(Duration::from_secs(1), woken.notified())
        .await
        .expect("the owner is woken");

    // B's current snapshot is the installed one, shippable as received.
    let (b_meta, b_pack) = b.snapshots.packed().unwrap().unwrap();
    assert_eq!(b_meta, meta);
    assert_eq!(std::fs::read(&b_pack).unwrap(), bytes);
    let leftovers: Vec<_> = std::fs::read_dir(dir_b.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        leftovers.len(),
        3,
        "checkpoint, pack, current.json: {leftovers:?}"
    );

    // The installed state is durable (flushed: RocksDB's WAL is off): it
    // survives reopening B without its log.
    drop(b);
    drop(store_b);
    let (_store_b, mut b) = open_sm(&dir_b).await;
    assert_same_state(&a, &b);

    // Both go on identically.
    let next = next_publish(&a, "orders", "after");
    a.apply_entries(vec![next.clone()]).unwrap();
    b.apply_entries(vec![next]).unwrap();
    assert_same_state(&a, &b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installing_clears_the_per_topic_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let Pair { mut a, mut b, .. } = pair(tmp.path(), 200).await;
    // B's caches hold its old view of "orders" (fire sequence, pending).
    let entry = next_publish(&b, "orders", "b-cached");
    b.apply_entries(vec![entry]).unwrap();
    assert!(b.topics.contains_key("orders"));

    let (meta, pack) = snapshot_of(&mut a).await;
    let file = stream_into(&mut b, &std::fs::read(&pack).unwrap()).await;
    b.install_snapshot(&meta, file).await.unwrap();
    assert!(b.topics.is_empty() && b.groups.is_empty());
    let next = next_publish(&a, "orders", "after");
    a.apply_entries(vec![next.clone()]).unwrap();
    b.apply_entries(vec![next]).unwrap();
    assert_same_state(&a, &b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_topic_cache_stays_bounded_and_numbering_survives_its_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let Pair { mut a, .. } = pair(tmp.path(), 10).await;
    let fire_seq = |a: &StateMachine, topic: &str| {
        let raw = a.store.get_topic(topic).unwrap().expect("topic state");
        TopicState::decode(raw.as_slice()).unwrap().next_fire_seq
    };
    let topics = super::CACHED_STATES + 1000;
    for i in 0..topics {
        // Due now: each fires as it applies, into its own topic's fire log.
        let entry = next_publish(&a, &format!("many-{i}"), "x");
        a.apply_entries(vec![entry]).unwrap();
        assert!(
            a.topics.len() <= super::CACHED_STATES,
            "{} cached",
            a.topics.len()
        );
    }
    assert_eq!(fire_seq(&a, "many-0"), 1);
    // Reloaded after the cache let it go, the topic numbers on.
    let entry = next_publish(&a, "many-0", "y");
    a.apply_entries(vec![entry]).unwrap();
    assert_eq!(fire_seq(&a, "many-0"), 2);
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_interrupted_by_a_crash_is_finished_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let Pair {
        dir_b,
        mut a,
        store_b,
        b,
    } = pair(tmp.path(), 1_000).await;
    let (meta, pack) = snapshot_of(&mut a).await;
    // Steps 1 and 2 of an install (unpacked, marker written) ...
    let (dir, busy) = b.snapshots.new_checkpoint_dir();
    unpack(std::fs::File::open(&pack).unwrap(), &dir).unwrap();
    b.snapshots.begin_install(&dir, &meta).unwrap();
    // ... then part of step 3: everything cleared, some keys copied, and a
    // flush (memtables fill up), then the crash.
    let empty = Store::open(&tmp.path().join("empty"), &StoreResources::default()).unwrap();
    store_b.replace_with(&empty, 1 << 20).unwrap();
    let mut batch = store_b.batch();
    for (key, value) in a.store.dump_cf("pending").unwrap().iter().take(100) {
        let due = i64::from_be_bytes(key[..8].try_into().unwrap());
        let offset = u64::from_be_bytes(key[8..16].try_into().unwrap());
        let topic = chronos_proto::internal::EventKeys::decode(value.as_slice())
            .unwrap()
            .topic;
        batch.put_pending(&topic, due, offset, value);
    }
    batch.commit().unwrap();
    store_b.flush().unwrap();
    drop((busy, b, store_b));

    let (_store_b, b) = open_sm(&dir_b).await;
    assert_same_state(&a, &b);
    assert!(b.snapshots.pending_install().unwrap().is_none());
    assert_eq!(b.snapshots.current_meta().unwrap(), Some(meta));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_truncated_pack_is_rejected_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let Pair {
        dir_b,
        mut a,
        mut b,
        ..
    } = pair(tmp.path(), 500).await;
    let (meta, pack) = snapshot_of(&mut a).await;
    let (before, applied, files) = (dump(&b.store), b.applied, snapshot_files(&dir_b));

    let good = std::fs::read(&pack).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x10;
    let truncated = good[..good.len() - 100].to_vec();
    let mut wrong_meta = meta.clone();
    let last = meta.last_log_id.unwrap();
    wrong_meta.last_log_id = Some(crate::codec::log_id(last.leader_id.term, 1, last.index + 5));
    let cases = [
        ("flipped bit", flipped, &meta, "CRC mismatch"),
        ("truncated", truncated, &meta, "truncated"),
        (
            "meta of another state",
            good.clone(),
            &wrong_meta,
            "the checkpoint is at",
        ),
    ];
    for (what, bytes, meta, why) in cases {
        let file = stream_into(&mut b, &bytes).await;
        let err = b.install_snapshot(meta, file).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("rejected") && msg.contains(why),
            "{what}: {msg}"
        );
        assert!(dump(&b.store) == before, "{what}: live state changed");
        assert_eq!(b.applied, applied, "{what}");
        assert_eq!(snapshot_files(&dir_b), files, "{what}: leftovers");
    }
    // The intact one still installs.
    let file = stream_into(&mut b, &good).await;
    b.install_snapshot(&meta, file).await.unwrap();
    assert_same_state(&a, &b);
}

/// openraft asks for the current snapshot while it loads its state (meta
/// only), then only to ship it: only asks after `Raft::new` returned pack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_snapshot_is_packed_when_asked_after_start() {
    use tokio::io::AsyncReadExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    populate_a(&dir, 100).await;
    let (_, mut sm) = open_sm(&dir).await;
    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let (_, mut sm) = {
        drop(sm);
        open_sm(&dir).await
    };
    let mut head = [0u8; 8];
    let mut at_start = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(at_start.meta, built.meta);
    at_start.snapshot.read_exact(&mut head).await.unwrap();
    assert_ne!(&head, b"CHRSNAP\0", "not packed for openraft's start");
    let mut again = sm.get_current_snapshot().await.unwrap().unwrap();
    again.snapshot.read_exact(&mut head).await.unwrap();
    assert_ne!(
        &head, b"CHRSNAP\0",
        "asked twice while loading: still not packed"
    );
    sm.serving_switch()
        .store(true, std::sync::atomic::Ordering::Release);
    let mut later = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(later.meta, built.meta);
    later.snapshot.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"CHRSNAP\0");
}

/// Timings for the report: `CHRONOS_SNAPSHOT_EVENTS=200000 cargo nextest run
/// --workspace --run-ignored only -E 'test(measure_snapshot)' --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_snapshot_pack_unpack_install() {
    let events: usize = std::env::var("CHRONOS_SNAPSHOT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let Pair { mut a, mut b, .. } = pair(tmp.path(), events).await;
    eprintln!(
        "populated {events} pending events in {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let built = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    eprintln!("checkpoint: {:?}", started.elapsed());
    let started = Instant::now();
    let (_, pack) = a.snapshots.packed().unwrap().unwrap();
    let bytes = std::fs::read(&pack).unwrap();
    eprintln!("pack: {} bytes in {:?}", bytes.len(), started.elapsed());
    let file = stream_into(&mut b, &bytes).await;
    let report = b.install_received(&built.meta, file).await.unwrap();
    eprintln!("install: {report:?}");
    assert_same_state(&a, &b);
}

/// One `Fire` gathers several releases, and a later release may number an
/// event due earlier (it reached the wheel late): applying places each under
/// the leader's number, whatever the pending order (it once asserted that
/// the numbers rose in pending order, and a replica could not apply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_numbering_an_earlier_due_event_later_applies() {
    use chronos_proto::internal::{FireCommand, FiredRecord, PendingRef};
    let tmp = tempfile::tempdir().unwrap();
    let (store, mut sm) = open_sm(tmp.path()).await;
    let now = crate::wall_ms();
    let (early, late) = (now + 60_000, now + 60_500);
    let record = |id: &str, due_ts| {
        EventRecord {
            topic: "t".into(),
            message_id: id.into(),
            due_ts,
            schedule_ts: due_ts,
            ..Default::default()
        }
        .encode_to_vec()
        .into()
    };
    let entry = |index, cmd| Entry {
        log_id: crate::codec::log_id(1, 1, index),
        payload: EntryPayload::Normal(cmd),
    };
    let publish = Command::publish(PublishCommand {
        publish_ts: now,
        first_offset: 0,
        events: vec![record("late", late), record("early", early)],
        dedup_expiry_ts: now + 60_000,
        ..Default::default()
    });
    // Released first: offset 0 (due later) as number 0; then offset 1.
    let fire = Command::fire(FireCommand {
        fire_ts: late,
        events: vec![
            PendingRef {
                due_ts: late,
                offset: 0,
            },
            PendingRef {
                due_ts: early,
                offset: 1,
            },
        ],
        seqs: vec![0, 1],
        released_ts: vec![late, late],
    });
    sm.apply_entries(vec![entry(1, publish), entry(2, fire)])
        .unwrap();
    let fired: Vec<u64> = store
        .scan_fired("t", 0, 10)
        .unwrap()
        .into_iter()
        .map(|(seq, raw)| {
            assert_eq!(seq, FiredRecord::decode(raw.as_slice()).unwrap().offset);
            seq
        })
        .collect();
    assert_eq!(fired, [0, 1]);
}

/// A data directory written before `due_counts` existed gets its counts on
/// open, equal to what applying kept.
#[tokio::test]
async fn counts_by_due_time_are_rebuilt_for_a_store_that_lacks_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    populate_a(&dir, 300).await;
    let (store, sm) = open_sm(&dir).await;
    let kept: Vec<_> = ["orders", "billing"]
        .iter()
        .map(|t| store.due_counts(t, 0, i64::MAX).unwrap())
        .collect();
    // The 300 "later" events but the cancelled one; the rest fired.
    let total: u64 = kept.iter().flatten().map(|(_, n)| n).sum();
    assert_eq!(total, 299, "{kept:?}");
    store.forget_due_counts().unwrap();
    assert!(store.due_counts("orders", 0, i64::MAX).unwrap().is_empty());
    drop((store, sm));
    let (store, _sm) = open_sm(&dir).await;
    let rebuilt: Vec<_> = ["orders", "billing"]
        .iter()
        .map(|t| store.due_counts(t, 0, i64::MAX).unwrap())
        .collect();
    assert_eq!(rebuilt, kept);
}

/// A schedule's spec is stored apart from its state, so an occurrence
/// rewrites only the state; a schedule stored before that (its spec inside
/// the state) reads the same and moves the spec out at its next advance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_keeps_its_spec_apart_and_an_older_record_moves_it_out() {
    use chronos_proto::internal::{ScheduleAdvance, ScheduleCommand, ScheduleRecord};
    use chronos_proto::v1::schedule::Recurrence;
    use chronos_proto::v1::Schedule;
    let tmp = tempfile::tempdir().unwrap();
    let (store, mut sm) = open_sm(tmp.path()).await;
    let now = crate::wall_ms();
    let spec = |id: &str| Schedule {
        schedule_id: id.into(),
        topic: "t".into(),
        payload: Bytes::from(vec![b'x'; 256]),
        recurrence: Some(Recurrence::EveryMs(60_000)),
        start_ts: now + 60_000,
        ..Default::default()
    };
    let entry = |index, cmd| Entry {
        log_id: crate::codec::log_id(1, 1, index),
        payload: EntryPayload::Normal(cmd),
    };
    // "new": created through the log. "old": written as before specs were
    // kept apart, the spec inside the state record and no spec key.
    let create = Command::schedule(ScheduleCommand {
        now_ts: now,
        op: Some(chronos_proto::internal::schedule_command::Op::Create(
            spec("new").encode_to_vec().into(),
        )),
    });
    sm.apply_entries(vec![entry(1, create)]).unwrap();
    let old = ScheduleRecord {
        spec: spec("old").encode_to_vec().into(),
        next_ts: now + 60_000,
        created_ts: now,
        updated_ts: now,
        version: 1,
        ..Default::default()
    };
    let mut batch = store.batch();
    batch.put_schedule("old", None, ("t", old.next_ts), &old.encode_to_vec(), None);
    batch.commit().unwrap();

    let stored = store.get_schedule("new").unwrap().unwrap();
    assert_eq!(
        stored.spec.as_deref(),
        Some(&spec("new").encode_to_vec()[..])
    );
    assert!(ScheduleRecord::decode(&stored.state[..])
        .unwrap()
        .spec
        .is_empty());
    assert!(
        stored.state.len() < 64,
        "{} bytes of state",
        stored.state.len()
    );
    let before = store.get_schedule("old").unwrap().unwrap();
    assert_eq!(before.spec, None);
    let (record, read) = crate::schedule::decode_stored(before.clone()).unwrap();
    assert_eq!((read, record.next_ts), (spec("old"), now + 60_000));

    // One occurrence of each: the leader's advances, applied.
    let advance = |id: &str| ScheduleAdvance {
        schedule_id: id.into(),
        version: 1,
        from_ts: now + 60_000,
        next_ts: now + 120_000,
        stored_ts: vec![now + 60_000],
    };
    let publish = Command::publish(PublishCommand {
        publish_ts: now,
        dedup_expiry_ts: now + 60_000,
        advances: vec![advance("new"), advance("old")],
        ..Default::default()
    });
    sm.apply_entries(vec![entry(2, publish)]).unwrap();
    for id in ["new", "old"] {
        let stored = store.get_schedule(id).unwrap().unwrap();
        assert_eq!(
            stored.spec.as_deref(),
            Some(&spec(id).encode_to_vec()[..]),
            "{id}"
        );
        let state = ScheduleRecord::decode(&stored.state[..]).unwrap();
        assert!(state.spec.is_empty(), "{id}");
        assert_eq!(
            (state.next_ts, state.stored_ts.clone()),
            (now + 120_000, vec![now + 60_000])
        );
        let (_, read) = crate::schedule::decode_stored(stored.clone()).unwrap();
        assert_eq!(read, spec(id));
    }
    let due = store.scan_schedules_due(0, i64::MAX, 10).unwrap();
    assert_eq!(
        due,
        [
            (now + 120_000, "new".to_string()),
            (now + 120_000, "old".to_string())
        ]
    );
    let listed: Vec<String> = store
        .list_schedules("", "", 10)
        .unwrap()
        .into_iter()
        .map(|(id, stored)| {
            assert!(stored.spec.is_some(), "{id}");
            id
        })
        .collect();
    assert_eq!(listed, ["new", "old"]);
}
