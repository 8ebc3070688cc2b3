//! The owner's handling of its inputs, on a real single-voter partition
//! (RocksDB, the node log, openraft): concurrent publishes, a term change
//! in the middle of deliveries, and acks that must never come back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::state_machine::tests::{event, options, wait_for};
use crate::test_net::Router;
use crate::{
    parse_delivery_id, wall_ms, Member, Outgoing, Partition, SettleItem, SettleOp, SettleResult,
    SoloNetwork, Start, Terms,
};

const DEADLINE: Duration = Duration::from_secs(30);

async fn open(dir: &std::path::Path) -> Arc<Partition> {
    let p = Arc::new(Partition::open(options(dir), SoloNetwork).await.unwrap());
    wait_for("the partition to lead", || p.is_ready()).await;
    p
}

/// Retries `op` while the leader refuses writes without naming a leader:
/// openraft does so while its quorum lease lapses (a loaded machine stalls
/// the heartbeats), and a refused write was not appended.
async fn retrying<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::PartitionError>>,
{
    let until = std::time::Instant::now() + DEADLINE;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(crate::PartitionError::NotLeader { leader: None, .. })
                if std::time::Instant::now() < until =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Attaches a member of group "g" on topic "t" (credit enough for any
/// test) and returns its outbox.
async fn attach_member(p: &Partition) -> tokio::sync::mpsc::UnboundedReceiver<Outgoing> {
    let (member, rx) = Member::new(Terms::window(100_000));
    p.attach("t".into(), "g".into(), Start::Latest, member)
        .await
        .unwrap();
    rx
}

/// The next delivery on `rx`: (fire sequence, attempt).
async fn next_delivery(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Outgoing>) -> (u64, u32) {
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(Some(Outgoing::Delivery(d))) => {
            let (_, _, seq, attempt) = parse_delivery_id(&d.delivery_id).unwrap();
            assert_eq!(attempt, d.attempt);
            (seq, attempt)
        }
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_get_dense_offsets_and_a_duplicate_shares_its_original() {
    let tmp = tempfile::tempdir().unwrap();
    let p = open(tmp.path()).await;
    let due = wall_ms() + 3_600_000;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let p = p.clone();
        // Tasks 2k and 2k+1 publish the same ids, so some land in the same
        // proposal and some dedup against one still in flight.
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..25 {
                let id = format!("id-{}-{i}", t / 2);
                let outcome = p.publish(vec![event("t", id.clone(), due)]).await.unwrap();
                out.push((id, outcome[0]));
            }
            out
        }));
    }
    let mut by_id: BTreeMap<String, Vec<crate::PublishOutcome>> = BTreeMap::new();
    for t in tasks {
        for (id, outcome) in t.await.unwrap() {
            by_id.entry(id).or_default().push(outcome);
        }
    }
    assert_eq!(by_id.len(), 100);
    let mut offsets = BTreeSet::new();
    for (id, outcomes) in &by_id {
        assert_eq!(outcomes.len(), 2, "{id}");
        assert_eq!(outcomes[0].offset, outcomes[1].offset, "{id}: one offset");
        assert_eq!(
            outcomes.iter().filter(|o| !o.duplicate).count(),
            1,
            "{id}: exactly one original"
        );
        offsets.insert(outcomes[0].offset);
    }
    assert_eq!(offsets, (0..100).collect(), "offsets are dense from 0");
    assert_eq!(p.status().next_offset, 100);
    p.shutdown().await;
}

/// Opens partition 0 on nodes 1..=3 over `router`.
async fn cluster(dir: &std::path::Path, router: &Router) -> BTreeMap<u64, Arc<Partition>> {
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        let mut o = options(&dir.join(format!("node-{id}")));
        o.node_id = id;
        o.voters = vec![1, 2, 3];
        // Elections only where the test cuts a node off, not because a
        // loaded machine stalled a heartbeat for 150 ms.
        o.heartbeat_interval = Duration::from_millis(100);
        o.election_timeout_min = Duration::from_millis(800);
        o.election_timeout_max = Duration::from_millis(1600);
        let p = Arc::new(Partition::open(o, router.node(id)).await.unwrap());
        router.add(id, p.raft().clone());
        nodes.insert(id, p);
    }
    nodes
}

/// The node whose owner holds a term, other than `not`.
async fn leader(nodes: &BTreeMap<u64, Arc<Partition>>, not: Option<u64>) -> u64 {
    let found = || {
        nodes
            .iter()
            .find(|(id, p)| Some(**id) != not && p.is_leading())
            .map(|(id, _)| *id)
    };
    wait_for("a leader", || found().is_some()).await;
    found().unwrap()
}

/// The leader once every node names it: every voter formed the group, so a
/// late one's first election no longer unseats the leader of the first.
async fn settled(nodes: &BTreeMap<u64, Arc<Partition>>) -> u64 {
    let agreed = || {
        let l = leader_now(nodes)?;
        nodes
            .values()
            .all(|p| p.status().leader == Some(l))
            .then_some(l)
    };
    wait_for("every node to name one leader", || agreed().is_some()).await;
    agreed().unwrap()
}

fn leader_now(nodes: &BTreeMap<u64, Arc<Partition>>) -> Option<u64> {
    nodes
        .iter()
        .find(|(_, p)| p.is_leading())
        .map(|(id, _)| *id)
}

fn acks(seqs: &[u64]) -> Vec<SettleItem> {
    seqs.iter()
        .map(|&seq| SettleItem {
            topic: "t".into(),
            seq,
            attempt: 1,
            op: SettleOp::Ack,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_term_change_ends_the_old_term_and_each_new_one_starts_from_the_applied_state() {
    let tmp = tempfile::tempdir().unwrap();
    let router = Router::default();
    let nodes = cluster(tmp.path(), &router).await;
    let first = settled(&nodes).await;
    let p = &nodes[&first];
    let (member, mut rx) = Member::new(Terms::window(100));
    p.attach("t".into(), "g".into(), Start::Earliest, member)
        .await
        .unwrap();
    let now = wall_ms();
    let events: Vec<_> = (0..10).map(|i| event("t", format!("e{i}"), now)).collect();
    retrying("publish", || p.publish(events.clone())).await;
    let mut delivered = BTreeSet::new();
    while delivered.len() < 10 {
        let (seq, attempt) = next_delivery(&mut rx).await;
        assert_eq!(attempt, 1);
        delivered.insert(seq);
    }
    let tried: Vec<u64> = delivered.iter().copied().take(5).collect();
    let results = retrying("ack", || p.settle("g".into(), acks(&tried), true)).await;
    // Under load a lapsed lease can end the term between delivery and ack
    // (the ack then finds attempt 1 no longer in flight): count only what
    // was acked.
    let acked: Vec<u64> = tried
        .iter()
        .zip(&results)
        .filter(|(_, r)| matches!(r, SettleResult::Acked))
        .map(|(seq, _)| *seq)
        .collect();
    assert!(!acked.is_empty(), "no ack took: {results:?}");

    // Cut off, the leader is replaced in a later term; healed, it hears of
    // that term, ends its own, and tells its member to go.
    router.cut(first, true);
    let second = leader(&nodes, Some(first)).await;
    router.cut(first, false);
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(Some(Outgoing::Closed(_))) => {}
        Ok(Some(Outgoing::Delivery(d))) => panic!("delivery after the term ended: {d:?}"),
        other => panic!("expected the stream to close, got {other:?}"),
    }
    wait_for("the old leader to drop its term", || {
        !nodes[&first].is_leading()
    })
    .await;

    // The new term goes on from the applied state: the next offset, what was
    // not acked redelivered (attempt 2 or later), the new event delivered,
    // and an acked event never again.
    let p = &nodes[&second];
    let after = event("t", "after".into(), wall_ms());
    let outcome = retrying("publish", || p.publish(vec![after.clone()])).await;
    assert_eq!((outcome[0].offset, outcome[0].duplicate), (10, false));
    let (member, mut rx) = Member::new(Terms::window(100));
    p.attach("t".into(), "g".into(), Start::Earliest, member)
        .await
        .unwrap();
    let mut again = BTreeMap::new();
    while again.len() < delivered.len() - acked.len() + 1 {
        let (seq, attempt) = next_delivery(&mut rx).await;
        assert!(!acked.contains(&seq), "acked event {seq} came back");
        again.insert(seq, attempt);
    }
    for seq in delivered.iter().filter(|s| !acked.contains(s)) {
        assert!(
            again.get(seq).is_some_and(|&a| a >= 2),
            "event {seq} is redelivered as attempt 2 or later: {again:?}"
        );
    }
    let new: Vec<u64> = again
        .iter()
        .filter(|(_, &a)| a == 1)
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(new.len(), 1, "the new event, once: {again:?}");
    retrying("ack", || p.settle("g".into(), acks(&new), true)).await;

    // The first node's owner leads again, in a yet later term, and builds
    // it from everything applied since.
    let mut current = second;
    while current != first {
        router.cut(current, true);
        let next = leader(&nodes, Some(current)).await;
        router.cut(current, false);
        wait_for("the cut leader to step down", || {
            !nodes[&current].is_leading()
        })
        .await;
        current = next;
    }
    let back = event("t", "back".into(), wall_ms());
    let outcome = retrying("publish", || nodes[&first].publish(vec![back.clone()])).await;
    assert_eq!((outcome[0].offset, outcome[0].duplicate), (11, false));
    for p in nodes.values() {
        p.shutdown().await;
    }
}

/// Message ids delivered on `rx` until `sentinel` comes; panics on a second
/// first-attempt delivery of an id (the wheel released it twice).
async fn delivered_until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
    sentinel: &str,
) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    loop {
        let d = match tokio::time::timeout(DEADLINE, rx.recv()).await {
            Ok(Some(Outgoing::Delivery(d))) => d,
            other => panic!("expected a delivery, got {other:?}"),
        };
        let id = d.event.expect("a delivery carries its event").message_id;
        if id == sentinel {
            return ids;
        }
        assert_eq!(d.attempt, 1, "{id} redelivered without a failure");
        assert!(ids.insert(id.clone()), "{id} delivered twice");
    }
}

/// Publishes events `e0`..`e{n-1}` of topic `t`, one due per ms from half a
/// second on; returns the first due time and the instant it comes.
async fn one_due_per_ms(p: &Partition, n: usize) -> (i64, tokio::time::Instant) {
    let due = wall_ms() + 500;
    let events: Vec<_> = (0..n)
        .map(|i| event("t", format!("e{i}"), due + i as i64))
        .collect();
    retrying("publish", || p.publish(events.clone())).await;
    let start = tokio::time::Instant::now() + Duration::from_millis((due - wall_ms()) as u64);
    (due, start)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_the_wheel_either_wins_or_finds_the_event_fired_never_both() {
    let tmp = tempfile::tempdir().unwrap();
    let p = open(tmp.path()).await;
    let mut rx = attach_member(&p).await;
    // Each even event is cancelled 0-2 ms before its due time, so cancels
    // land before, after and while their event's Fire is proposed but not
    // applied.
    let n = 1_000;
    let (_, start) = one_due_per_ms(&p, n).await;
    let mut cancels = Vec::new();
    for i in (0..n).step_by(2) {
        let p = p.clone();
        cancels.push(tokio::spawn(async move {
            // Timing the cancel, not waiting for a condition.
            let at = start + Duration::from_millis(i as u64);
            tokio::time::sleep_until(at - Duration::from_millis(i as u64 % 3)).await;
            let id = format!("e{i}");
            let outcome = retrying("cancel", || p.cancel("t".into(), id.clone())).await;
            (id, outcome)
        }));
    }
    let mut outcomes = BTreeMap::new();
    for c in cancels {
        let (id, outcome) = c.await.unwrap();
        outcomes.insert(id, outcome);
    }
    // Fired after every other event, so delivered after them.
    wait_for("every event to fire", || p.status().pending == 0).await;
    let sentinel = event("t", "sentinel".into(), wall_ms());
    retrying("publish", || p.publish(vec![sentinel.clone()])).await;
    let delivered = delivered_until(&mut rx, "sentinel").await;

    let (mut cancelled, mut fired) = (0, 0);
    for (id, outcome) in &outcomes {
        match outcome {
            crate::CancelOutcome::Cancelled { .. } => {
                cancelled += 1;
                assert!(!delivered.contains(id), "{id} was cancelled and delivered");
            }
            crate::CancelOutcome::AlreadyFired { .. } => {
                fired += 1;
                assert!(delivered.contains(id), "{id} fired but was not delivered")
            }
            other => panic!("{id}: unexpected {other:?}"),
        }
    }
    for i in (1..n).step_by(2) {
        assert!(delivered.contains(&format!("e{i}")), "e{i} not delivered");
    }
    println!("{cancelled} cancels won, {fired} found their event fired");
    assert!(cancelled > 0, "no cancel came before its event fired");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedules_racing_the_wheel_move_the_event_or_find_it_fired_never_both() {
    let tmp = tempfile::tempdir().unwrap();
    let p = open(tmp.path()).await;
    let mut rx = attach_member(&p).await;
    // Each even event gets two reschedules at once, 0-2 ms before its due
    // time: the second finds the first in flight (or in its proposal), and
    // either may find the event released, its Fire not yet applied.
    let n = 600;
    let (due, start) = one_due_per_ms(&p, n).await;
    let mut moves = Vec::new();
    for i in (0..n).step_by(2) {
        for later in [300, 400] {
            let p = p.clone();
            moves.push(tokio::spawn(async move {
                // Timing the reschedule, not waiting for a condition.
                let at = start + Duration::from_millis(i as u64);
                tokio::time::sleep_until(at - Duration::from_millis(i as u64 % 3)).await;
                let moved = event("t", format!("e{i}"), due + i as i64 + later);
                let outcome =
                    retrying("reschedule", || p.publish_with(vec![moved.clone()], true)).await;
                outcome[0].duplicate
            }));
        }
    }
    let mut duplicates = 0;
    for m in moves {
        duplicates += usize::from(m.await.unwrap());
    }
    wait_for("every event to fire", || p.status().pending == 0).await;
    let sentinel = event("t", "sentinel".into(), wall_ms());
    retrying("publish", || p.publish(vec![sentinel.clone()])).await;
    // Fails on any event delivered twice.
    let delivered = delivered_until(&mut rx, "sentinel").await;
    for i in 0..n {
        assert!(delivered.contains(&format!("e{i}")), "e{i} not delivered");
    }
    println!("{duplicates} of {n} reschedules found their event fired");
    assert!(duplicates < n, "no reschedule came before its event fired");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_write_each_fired_record_under_the_number_the_leader_gave_it() {
    let tmp = tempfile::tempdir().unwrap();
    let router = Router::default();
    let nodes = cluster(tmp.path(), &router).await;
    let first = settled(&nodes).await;
    let p = &nodes[&first];
    let mut rx = attach_member(p).await;
    // Fired by the wheel, and due at once (numbered in the publish).
    let now = wall_ms();
    let mut events: Vec<_> = (0..300)
        .map(|i| event("t", format!("w{i}"), now + 100 + i))
        .collect();
    events.extend((0..100).map(|i| event("t", format!("now{i}"), now - 1)));
    retrying("publish", || p.publish(events.clone())).await;
    wait_for("every event to fire", || p.status().pending == 0).await;
    let sentinel = event("t", "sentinel".into(), wall_ms());
    retrying("publish", || p.publish(vec![sentinel.clone()])).await;
    let delivered = delivered_until(&mut rx, "sentinel").await;
    assert_eq!(delivered.len(), 400);

    let fire_log = |p: &Partition| -> Vec<(u64, u64)> {
        p.store
            .scan_fired("t", 0, 10_000)
            .unwrap()
            .into_iter()
            .map(|(seq, raw)| {
                let rec = <chronos_proto::internal::FiredRecord as prost::Message>::decode(
                    raw.as_slice(),
                )
                .unwrap();
                (seq, rec.offset)
            })
            .collect()
    };
    let want = fire_log(p);
    assert_eq!(
        want.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        (0..401).collect::<Vec<_>>(),
        "numbers are dense"
    );
    for (id, node) in &nodes {
        wait_for("the replica to apply every fire", || {
            fire_log(node).len() == want.len()
        })
        .await;
        assert_eq!(fire_log(node), want, "node {id}'s fire log");
    }
    for p in nodes.values() {
        p.shutdown().await;
    }
}

/// A recurring schedule on a real partition: occurrences are stored ahead,
/// once each; a pause cancels the one stored ahead; a resume right after
/// stores that same occurrence again under its (cancelled) id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_stores_occurrences_ahead_and_a_pause_cancels_them() {
    use chronos_proto::internal::schedule_command::Op;
    use chronos_proto::v1::{schedule::Recurrence, Schedule};
    use chronos_store::IdState;
    use prost::Message;

    use crate::schedule::{occurrence_id, ScheduleStatus};

    let tmp = tempfile::tempdir().unwrap();
    let p = open(tmp.path()).await;
    let spec = Schedule {
        schedule_id: "s".into(),
        topic: "sched".into(),
        recurrence: Some(Recurrence::EveryMs(1000)),
        ..Default::default()
    };
    let created = retrying("create", || {
        p.change_schedule(Op::Create(spec.encode_to_vec().into()))
    })
    .await;
    assert_eq!(created.status, ScheduleStatus::Created);
    let record = || p.schedule("s").unwrap().unwrap().0;
    wait_for("three occurrences stored", || record().occurrences >= 3).await;
    // Stored ahead: the newest stored occurrence is not due yet.
    let ahead = *record().stored_ts.last().unwrap();
    assert!(ahead > wall_ms(), "stored {ahead} is not ahead");
    let id = |ts| occurrence_id("s", ts);
    let state = |ts| {
        p.store()
            .get_id("sched", &id(ts), i64::MIN)
            .unwrap()
            .map(|e| e.state)
    };
    assert_eq!(state(ahead), Some(IdState::Pending));

    let paused = retrying("pause", || p.change_schedule(Op::Pause("s".into()))).await;
    assert_eq!(paused.status, ScheduleStatus::Paused);
    assert!(
        !paused.cancelled.is_empty(),
        "the occurrence stored ahead was not cancelled"
    );
    let r = record();
    assert!(r.paused && r.next_ts == 0 && r.stored_ts.is_empty());
    let cancelled: Vec<i64> = (0..5)
        .map(|k| ahead - k * 1000)
        .filter(|ts| state(*ts) == Some(IdState::Cancelled))
        .collect();
    assert!(!cancelled.is_empty());

    let resumed = retrying("resume", || p.change_schedule(Op::Resume("s".into()))).await;
    assert_eq!(resumed.status, ScheduleStatus::Resumed);
    let latest = *cancelled.iter().max().unwrap();
    if latest > wall_ms() + 500 {
        // Still ahead of the resume: stored again under the same id.
        wait_for("the cancelled occurrence stored again", || {
            matches!(state(latest), Some(IdState::Pending | IdState::Fired))
        })
        .await;
    }
    let before = record().occurrences;
    wait_for("occurrences after the resume", || {
        record().occurrences >= before + 2
    })
    .await;
    // Each nominal time was stored once: the remembered ones are 1 s apart.
    let stored = record().stored_ts;
    for pair in stored.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "{stored:?}");
    }
}

/// A window of 200 ms, refilled every 100 ms while events are published
/// into the part already loaded (they join the wheel when their publish
/// applies) and beyond it (a refill reads them): each fires once, none
/// early. A refill reads on from the window's old end, so this would lose
/// any event that neither path put in the wheel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_window_refilled_many_times_fires_every_event_once_never_early() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, mut rx) = short_window(tmp.path()).await;
    let mut due = BTreeMap::new();
    // 10 ms to 1.2 s ahead; each round lands after the window moved on.
    publish_rounds(&p, &mut due, 6, 10, Duration::from_millis(150)).await;
    each_delivered_once_never_early(&mut rx, &due).await;
    // Delivered at release; each `Fire` applies after.
    wait_for("every event to leave pending", || p.status().pending == 0).await;
    p.shutdown().await;
}

/// A single-voter partition whose wheel window is 200 ms (so it is loaded
/// many times in a test), with one member of group "g" on topic "t".
async fn short_window(
    dir: &std::path::Path,
) -> (
    Arc<Partition>,
    tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut opts = options(dir);
    opts.firing.horizon_ms = 200;
    let p = Arc::new(Partition::open(opts, SoloNetwork).await.unwrap());
    wait_for("the partition to lead", || p.is_ready()).await;
    let rx = attach_member(&p).await;
    (p, rx)
}

/// Publishes `rounds` rounds of 40 events due `lead_ms` to `lead_ms` + 1.17 s
/// ahead, `pause` apart, noting each id's due time in `due`.
async fn publish_rounds(
    p: &Partition,
    due: &mut BTreeMap<String, i64>,
    rounds: usize,
    lead_ms: i64,
    pause: Duration,
) {
    for round in 0..rounds {
        let now = wall_ms();
        let events: Vec<_> = (0..40)
            .map(|i| {
                let id = format!("r{round}-{i}");
                let at = now + lead_ms + i * 30;
                due.insert(id.clone(), at);
                event("t", id, at)
            })
            .collect();
        retrying("publish", || p.publish(events.clone())).await;
        // Timing the workload, not waiting for a condition.
        tokio::time::sleep(pause).await;
    }
}

/// Waits for a delivery of every id in `due` (id → due time); panics on one
/// delivered early, twice, or not within the deadline. Returns the ids in
/// the order they were delivered.
async fn each_delivered_once_never_early(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
    due: &BTreeMap<String, i64>,
) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut order = Vec::with_capacity(due.len());
    while seen.len() < due.len() {
        let d = match tokio::time::timeout(DEADLINE, rx.recv()).await {
            Ok(Some(Outgoing::Delivery(d))) => d,
            other => panic!("{} of {} delivered, then {other:?}", seen.len(), due.len()),
        };
        let received = wall_ms();
        let id = d.event.expect("a delivery carries its event").message_id;
        let at = due[&id];
        assert!(received >= at, "{id} delivered {} ms early", at - received);
        assert_eq!(d.attempt, 1, "{id} redelivered without a failure");
        assert!(seen.insert(id.clone()), "{id} delivered twice");
        order.push(id);
    }
    order
}

/// Loads of the window hold many times `LOAD_CHUNK` events (600 due in the
/// same millisecond, beyond the loaded part when published) and are read a
/// chunk per step while publishes into the loaded part keep arriving: each
/// event fires once, none early. A load that stopped after its first chunk
/// would lose the rest of each cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_loaded_a_chunk_per_step_fires_every_event_once_never_early() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, mut rx) = short_window(tmp.path()).await;
    let mut due = BTreeMap::new();
    let now = wall_ms();
    for cluster in 0..4i64 {
        let at = now + 600 + cluster * 150;
        let events: Vec<_> = (0..600)
            .map(|i| {
                let id = format!("c{cluster}-{i}");
                due.insert(id.clone(), at);
                event("t", id, at)
            })
            .collect();
        retrying("publish", || p.publish(events.clone())).await;
    }
    // Into the loaded part while the clusters load: 20 ms to 1.2 s ahead.
    publish_rounds(&p, &mut due, 8, 20, Duration::from_millis(60)).await;
    each_delivered_once_never_early(&mut rx, &due).await;
    wait_for("every event to leave pending", || p.status().pending == 0).await;
    p.shutdown().await;
}

/// A burst larger than a release step and than the events let out in
/// unapplied `Fire`s (24 000, due over 7 ms): released a step at a time,
/// each event is delivered once, none early, and in due order (a step that
/// took the wrong end of the released events would deliver later ones
/// first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_released_a_step_at_a_time_is_delivered_once_in_due_order() {
    let tmp = tempfile::tempdir().unwrap();
    let p = open(tmp.path()).await;
    let mut rx = attach_member(&p).await;
    let at = wall_ms() + 3_000;
    let mut due = BTreeMap::new();
    for batch in 0..24i64 {
        let events: Vec<_> = (0..1000)
            .map(|i| {
                let id = format!("b{batch}-{i}");
                due.insert(id.clone(), at + (batch * 1000 + i) % 7);
                event("t", id, at + (batch * 1000 + i) % 7)
            })
            .collect();
        retrying("publish", || p.publish(events.clone())).await;
    }
    assert!(
        wall_ms() < at,
        "publishing took past the due time; the burst was not one"
    );
    let order = each_delivered_once_never_early(&mut rx, &due).await;
    for pair in order.windows(2) {
        let (a, b) = (due[&pair[0]], due[&pair[1]]);
        assert!(a <= b, "{} (due {b}) delivered after one due {a}", pair[1]);
    }
    wait_for("every event to leave pending", || p.status().pending == 0).await;
    p.shutdown().await;
}

/// Many schedules on one instant: the term counts them as their creates
/// apply and starts storing them before the usual window (`LOOKAHEAD_MS +
/// GATHER_MS` ahead), to store them all `LOOKAHEAD_MS` ahead at the pace it
/// assumes; without that, none is stored before the window reaches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_occurrences_is_stored_before_the_usual_window() {
    use chronos_proto::internal::schedule_command::Op;
    use chronos_proto::v1::{schedule::Recurrence, Schedule};
    use prost::Message;

    use crate::schedule::{GATHER_MS, LOOKAHEAD_MS};

    // 2 s of work at the pace assumed before any burst is timed (3 750/s),
    // one more than the usual window absorbs.
    const SCHEDULES: usize = 7_500;
    let tmp = tempfile::tempdir().unwrap();
    let p = open(tmp.path()).await;
    // A whole second, far enough ahead for the creates.
    let at = (wall_ms() / 1_000 + 8) * 1_000;
    let creates = (0..SCHEDULES).map(|i| {
        let p = p.clone();
        async move {
            let spec = Schedule {
                schedule_id: format!("s{i}"),
                topic: "burst".into(),
                recurrence: Some(Recurrence::EveryMs(3_600_000)),
                start_ts: at,
                ..Default::default()
            };
            retrying("create", || {
                p.change_schedule(Op::Create(spec.encode_to_vec().into()))
            })
            .await
        }
    });
    futures::future::join_all(creates).await;
    let usual = at - LOOKAHEAD_MS - GATHER_MS;
    assert!(
        wall_ms() < usual - 1_000,
        "the creates took too long for the test"
    );
    // The first in the due index ("s0") is stored first.
    let stored = || p.schedule("s0").unwrap().unwrap().0.occurrences > 0;
    while !stored() {
        assert!(
            wall_ms() < usual - 50,
            "nothing of the burst was stored before the usual window"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_for("the whole burst stored", || {
        (0..SCHEDULES).all(|i| {
            let (record, _) = p.schedule(&format!("s{i}")).unwrap().unwrap();
            record.occurrences == 1
        })
    })
    .await;
}

/// A group whose members all left goes idle (steps no longer look at it):
/// it must wake for the next member, with what fired meanwhile, and one
/// left holding deliveries must keep them for the next member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_left_by_its_members_delivers_to_the_next_what_it_missed_or_held() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path()).await;
    let publish = |ids: &'static [&'static str]| {
        let p = p.clone();
        async move {
            let events: Vec<_> = ids
                .iter()
                .map(|id| event("t", id.to_string(), wall_ms()))
                .collect();
            retrying("publish", || p.publish(events.clone())).await;
        }
    };
    let join = || async {
        let (member, rx) = Member::new(Terms::window(100));
        p.attach("t".into(), "g".into(), Start::Latest, member.clone())
            .await
            .unwrap();
        (member, rx)
    };

    let (a, mut a_rx) = join().await;
    publish(&["e0", "e1", "e2"]).await;
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        got.insert(next_delivery(&mut a_rx).await);
    }
    assert_eq!(got, BTreeSet::from([(0, 1), (1, 1), (2, 1)]));
    let settled = p.settle("g".into(), acks(&[0, 1, 2]), true).await.unwrap();
    assert!(settled.iter().all(|r| *r == SettleResult::Acked));
    p.detach(a.id());

    // Idle now; these fire with nobody to take them.
    publish(&["e3", "e4"]).await;
    let (b, mut b_rx) = join().await;
    let mut got = BTreeSet::new();
    for _ in 0..2 {
        got.insert(next_delivery(&mut b_rx).await);
    }
    assert_eq!(got, BTreeSet::from([(3, 1), (4, 1)]));

    // B leaves holding both: the group keeps them for the next member.
    p.detach(b.id());
    let (_c, mut c_rx) = join().await;
    let mut got = BTreeSet::new();
    for _ in 0..2 {
        got.insert(next_delivery(&mut c_rx).await);
    }
    assert_eq!(got, BTreeSet::from([(3, 2), (4, 2)]));
    p.shutdown().await;
}
