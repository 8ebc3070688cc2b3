//! A cluster of three real server processes on 127.0.0.x: any node serves the
//! API, and losing a leader, a minority, a whole node's data or a network link
//! loses nothing acked and fires nothing early.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{PublishBatchRequest, ReplayRequest};
use common::cluster::{wait_caught_up, wipe_and_rejoin, Cluster, Options};
use common::seen::{assert_none_early, collect, wait_all};
use common::{event, now_ms, publish_req, subscribe_req, Member};
use tonic::transport::Channel;
use tonic::Code;

async fn events_client(endpoint: String) -> EventServiceClient<Channel> {
    EventServiceClient::connect(endpoint)
        .await
        .expect("connect")
}

/// Every event of `topic` the cluster's leaders hold, by message id.
async fn replay_ids(endpoint: String, topic: &str) -> BTreeSet<String> {
    let mut client = events_client(endpoint).await;
    let req = ReplayRequest {
        topic: topic.into(),
        partition_id: None,
        range: Some(chronos_proto::v1::replay_request::Range::Offsets(
            chronos_proto::v1::OffsetRange { from: 0, to: 0 },
        )),
        key: String::new(),
        ..Default::default()
    };
    let mut stream = client.replay(req).await.expect("replay").into_inner();
    let mut ids = BTreeSet::new();
    while let Some(ev) = stream.message().await.expect("replay stream") {
        ids.insert(ev.event.unwrap().message_id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_one_node_subscribe_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), Options::default());

    let status = cluster.status(1).await;
    assert_eq!(status.replication_factor, 3);
    assert_eq!(status.nodes.len(), 3);
    assert!(
        status.nodes.iter().all(|n| n.reachable),
        "{:?}",
        status.nodes
    );
    assert_eq!(status.partitions.len(), 4);
    for p in &status.partitions {
        let mut voters = p.voters.clone();
        voters.sort_unstable();
        assert_eq!(voters, vec![1, 2, 3], "partition {}", p.partition);
        assert!(
            p.leader.is_some(),
            "partition {} has no leader",
            p.partition
        );
        assert_eq!(p.replicas.len(), 2, "leader reports both followers: {p:?}");
    }

    let mut member = Member::join(cluster.node(2), subscribe_req("g", "orders", 100)).await;
    let due = now_ms() + 1500;
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    let events: Vec<_> = (0..40)
        .map(|i| chronos_proto::v1::Event {
            schedule_ts: due,
            ..event("orders", &format!("b-{i}"), b"x")
        })
        .collect();
    let resp = events_client(cluster.endpoint(1))
        .await
        .publish_batch(PublishBatchRequest { events })
        .await
        .expect("batch via node 1")
        .into_inner();
    let partitions: BTreeSet<u32> = resp.results.iter().map(|r| r.partition).collect();
    assert!(
        partitions.len() > 1,
        "40 ids should spread over partitions: {partitions:?}"
    );
    for r in resp.results {
        want.insert(r.message_id, r.due_ts);
    }
    let mut node3 = events_client(cluster.endpoint(3)).await;
    for i in 0..10 {
        let ev = chronos_proto::v1::Event {
            schedule_ts: due,
            ..event("orders", &format!("s-{i}"), b"y")
        };
        let r = node3
            .publish(publish_req(ev))
            .await
            .expect("publish via node 3")
            .into_inner();
        want.insert(r.message_id, r.due_ts);
    }

    let mut got = BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(20);
    while got.len() < want.len() && Instant::now() < until {
        let Some(d) = member.next_within(Duration::from_secs(1)).await else {
            continue;
        };
        let id = d.event.as_ref().unwrap().message_id.clone();
        assert!(now_ms() >= d.due_ts, "{id} delivered before its due time");
        assert_eq!(Some(&d.due_ts), want.get(&id), "{id}");
        member.ack(&[d.delivery_id.as_str()]).await;
        got.insert(id);
    }
    assert_eq!(
        got.len(),
        want.len(),
        "received {} of {}",
        got.len(),
        want.len()
    );

    // Admin from a third node sees the group; replay from it sees every event.
    let group = cluster
        .admin(3)
        .await
        .describe_group(chronos_proto::v1::DescribeGroupRequest {
            consumer_group: "g".into(),
            topic: "orders".into(),
        })
        .await
        .expect("describe via node 3")
        .into_inner()
        .group
        .unwrap();
    assert_eq!(group.lag, 0, "{group:?}");
    assert!(group.members >= 1, "{group:?}");
    assert_eq!(
        replay_ids(cluster.endpoint(3), "orders").await.len(),
        want.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_leader_loses_nothing_and_fires_nothing_early() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Options::default());
    let victim = cluster
        .leader_of(1, 0, &[1, 2, 3], Duration::from_secs(10))
        .await;
    let gateway = if victim == 1 { 2 } else { 1 };
    let survivors: Vec<u64> = (1..=3).filter(|&n| n != victim).collect();
    let endpoints: Vec<String> = survivors.iter().map(|&n| cluster.endpoint(n)).collect();
    let max_inflight = 50;
    let (seen, consumer) = collect(endpoints.clone(), "g", "jobs", max_inflight).await;

    // Publishers: batches of 20 through the gateway, due within the next 3 s.
    let acked: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (acked, stop, endpoint) = (acked.clone(), stop.clone(), cluster.endpoint(gateway));
        tokio::spawn(async move {
            let mut client = events_client(endpoint).await;
            let mut failures = 0u32;
            for batch in 0.. {
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    return failures;
                }
                let now = now_ms();
                let events = (0..20)
                    .map(|i| chronos_proto::v1::Event {
                        schedule_ts: now + (i * 150) as i64,
                        ..event("jobs", &format!("j-{batch}-{i}"), b"p")
                    })
                    .collect();
                let mut req = tonic::Request::new(PublishBatchRequest { events });
                req.set_timeout(Duration::from_secs(15));
                match client.publish_batch(req).await {
                    Ok(resp) => {
                        let mut acked = acked.lock().unwrap();
                        for r in resp.into_inner().results {
                            acked.insert(r.message_id, r.due_ts);
                        }
                    }
                    Err(s) => {
                        assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                        failures += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            failures
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = acked.lock().unwrap().len();
    assert!(
        before > 100,
        "only {before} events published before the kill"
    );

    // Kill -9 the leader of partition 0; probe partition 0 until it takes writes again.
    cluster.kill9(victim);
    let killed = Instant::now();
    let mut probe = events_client(cluster.endpoint(gateway)).await;
    let key = (0..)
        .map(|i| format!("probe-key-{i}"))
        .find(|k| chronos_api::Router::new(4).route(k, "") == 0)
        .unwrap();
    let mut attempt = 0;
    let failover = loop {
        attempt += 1;
        let ev = chronos_proto::v1::Event {
            key: key.clone(),
            ..event("probe", &format!("probe-{attempt}"), b"")
        };
        let mut req = tonic::Request::new(publish_req(ev));
        req.set_timeout(Duration::from_secs(20));
        match probe.publish(req).await {
            Ok(r) => {
                assert_eq!(r.into_inner().partition, 0);
                break killed.elapsed();
            }
            Err(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "partition 0 took no write for 20 s"
        );
    };
    println!("failover: partition 0 took writes again {failover:?} after kill -9 of its leader (node {victim})");
    let new_leader = cluster
        .leader_of(gateway, 0, &survivors, Duration::from_secs(10))
        .await;
    assert_ne!(new_leader, victim);

    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let failures = publisher.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > before,
        "publishing did not resume after the failover"
    );
    println!(
        "published {} events ({failures} batches refused with UNAVAILABLE around the kill)",
        acked.len()
    );

    wait_all(&seen, &acked, Duration::from_secs(60), || {
        "acked before and after the kill".into()
    })
    .await;
    consumer.abort();
    assert_none_early(&seen, &acked);
    let seen = seen.lock().unwrap();
    let redelivered = seen.values().filter(|v| v.len() > 1).count();
    println!("{} delivered, {redelivered} more than once", seen.len());
    // Only what was in flight (unacked, or acked on the dead leader before the
    // ack replicated) may come again: at most the window of each partition.
    assert!(
        redelivered <= (max_inflight * 4) as usize,
        "{redelivered} events redelivered"
    );
}

/// Publishes `batches` × 5 events on topic `topic` through node 1, alternating
/// due `soon` and `later`; what each was acknowledged with.
async fn publish_mixed(
    cluster: &Cluster,
    topic: &str,
    batches: usize,
    payload: usize,
    soon: i64,
    later: i64,
) -> BTreeMap<String, i64> {
    let mut client = events_client(cluster.endpoint(1)).await;
    let mut acked = BTreeMap::new();
    for b in 0..batches {
        let events = (0..5)
            .map(|i| chronos_proto::v1::Event {
                schedule_ts: if i % 2 == 0 { soon } else { later },
                ..event(topic, &format!("w-{b}-{i}"), &vec![b'x'; payload])
            })
            .collect();
        let resp = client
            .publish_batch(PublishBatchRequest { events })
            .await
            .expect("publish");
        for r in resp.into_inner().results {
            acked.insert(r.message_id, r.due_ts);
        }
    }
    acked
}

/// A member of `group` (from the earliest event) through node `via` takes and
/// acks `n` deliveries.
async fn consume_some(cluster: &Cluster, via: u64, group: &str, topic: &str, n: usize) {
    let req = chronos_proto::v1::SubscribeRequest {
        start: chronos_proto::v1::StartPosition::Earliest as i32,
        ..subscribe_req(group, topic, 10)
    };
    let mut member = Member::join(cluster.node(via), req).await;
    for _ in 0..n {
        let d = member.next(Duration::from_secs(10)).await;
        member.ack(&[d.delivery_id.as_str()]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_catches_up_from_the_log_and_can_lead() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        // Snapshots are taken often; the log is kept regardless (retention
        // decides), so the wiped node gets the whole history.
        extra_toml: "[raft]\nsnapshot_every_entries = 20\n".into(),
        ..Options::default()
    };
    let mut cluster = Cluster::start(dir.path(), opts);
    let acked = publish_mixed(&cluster, "w", 60, 4, now_ms() + 500, now_ms() + 3_600_000).await;
    consume_some(&cluster, 1, "g", "w", 10).await;

    let installed = wipe_and_rejoin(&mut cluster, 3).await;
    assert_eq!(
        installed, 0.0,
        "the retained log, not a snapshot, should feed node 3"
    );
    // Every replica holds the pending events; only leaders report them, so
    // a sum over the nodes counts each once.
    wait_caught_up(&cluster, 2, 1, Duration::from_secs(20)).await;
    let pending: u64 = cluster
        .status(1)
        .await
        .partitions
        .iter()
        .map(|p| p.pending)
        .sum();
    assert!(pending > 0, "nothing pending to count");
    let reported: f64 = (1..=3)
        .map(|id| cluster.node(id).metric("chronos_pending_events"))
        .sum();
    assert_eq!(
        reported, pending as f64,
        "chronos_pending_events summed over the nodes"
    );

    cluster.make_leader(3, 0).await;
    // Node 3, now leading partition 0, serves all of its history: replay
    // through it has every event, and a publish to partition 0 is taken.
    let ids = replay_ids(cluster.endpoint(3), "w").await;
    assert_eq!(ids.len(), acked.len(), "events lost");
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| chronos_api::Router::new(4).route(k, "") == 0)
        .unwrap();
    let ev = chronos_proto::v1::Event {
        key,
        ..event("w", "after", b"")
    };
    let r = events_client(cluster.endpoint(3))
        .await
        .publish(publish_req(ev))
        .await
        .expect("publish on the new leader")
        .into_inner();
    assert_eq!(r.partition, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_catches_up_from_a_snapshot_below_retention_and_fires_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        // Small segments and a one-second retention: sealed segments go as
        // soon as a snapshot covers them, so the log the wiped node needs is
        // gone and only a snapshot can bring it back.
        extra_toml: "[wal]\nsegment_bytes = \"64KiB\"\nretention_age = \"1s\"\n\
                     retention_check_interval = \"200ms\"\n[raft]\nsnapshot_every_entries = 10\n"
            .into(),
        ..Options::default()
    };
    let mut cluster = Cluster::start(dir.path(), opts);
    let later = now_ms() + 45_000;
    let acked = publish_mixed(&cluster, "w", 120, 2048, now_ms() + 300, later).await;
    consume_some(&cluster, 1, "g", "w", 10).await;
    // Wait until retention removed part of the history: replay through
    // node 1 no longer has every event.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if replay_ids(cluster.endpoint(1), "w").await.len() < acked.len() {
            break;
        }
        assert!(Instant::now() < until, "retention never removed a segment");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let installed = wipe_and_rejoin(&mut cluster, 3).await;
    assert!(
        installed >= 1.0,
        "node 3 should have installed snapshots, got {installed}"
    );
    cluster.make_leader(3, 0).await;

    // Everything pending (the `later` half) fires on time, through node 3.
    let pending: BTreeMap<String, i64> =
        acked.into_iter().filter(|(_, due)| *due >= later).collect();
    let (seen, consumer) = collect(vec![cluster.endpoint(3)], "late", "w", 500).await;
    let left = Duration::from_millis((later - now_ms()).max(0) as u64);
    wait_all(&seen, &pending, left + Duration::from_secs(30), || {
        "pending before the wipe".into()
    })
    .await;
    consumer.abort();
    assert_none_early(&seen, &pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_down_writes_continue_majority_down_writes_fail() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Options::default());
    cluster.kill9(3);
    let mut client = events_client(cluster.endpoint(1)).await;
    let mut acked = BTreeSet::new();
    for i in 0..40 {
        let mut req = tonic::Request::new(publish_req(event("m", &format!("m-{i}"), b"")));
        req.set_timeout(Duration::from_secs(15));
        let r = client
            .publish(req)
            .await
            .expect("a minority down must not stop writes");
        acked.insert(r.into_inner().message_id);
    }

    cluster.kill9(2);
    let started = Instant::now();
    let mut req = tonic::Request::new(publish_req(event("m", "no-quorum", b"")));
    req.set_timeout(Duration::from_secs(30));
    let err = client.publish(req).await.expect_err("no quorum, no ack");
    let took = started.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        took < Duration::from_secs(15),
        "refused only after {took:?}"
    );
    println!("majority down: publish refused with UNAVAILABLE after {took:?}");

    cluster.restart(2);
    cluster.restart(3);
    cluster.wait_ready_all();
    let ids = replay_ids(cluster.endpoint(3), "m").await;
    for id in &acked {
        assert!(ids.contains(id), "acked {id} lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_partition_heals_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        proxied: true,
        ..Options::default()
    };
    let cluster = Cluster::start(dir.path(), opts);
    let cut = cluster
        .leader_of(1, 0, &[1, 2, 3], Duration::from_secs(10))
        .await;
    let majority: Vec<u64> = (1..=3).filter(|&n| n != cut).collect();
    let gateway = majority[0];
    let (seen, consumer) = collect(vec![cluster.endpoint(gateway)], "g", "net", 100).await;

    cluster.isolate(cut);
    let isolated = Instant::now();
    // The majority side elects new leaders and takes writes.
    let mut client = events_client(cluster.endpoint(gateway)).await;
    let mut acked: BTreeMap<String, i64> = BTreeMap::new();
    for b in 0..10 {
        let now = now_ms();
        let events = (0..10)
            .map(|i| chronos_proto::v1::Event {
                schedule_ts: now + 1000,
                ..event("net", &format!("n-{b}-{i}"), b"")
            })
            .collect();
        let mut req = tonic::Request::new(PublishBatchRequest { events });
        req.set_timeout(Duration::from_secs(20));
        let resp = client
            .publish_batch(req)
            .await
            .expect("majority side takes writes");
        for r in resp.into_inner().results {
            acked.insert(r.message_id, r.due_ts);
        }
    }
    println!(
        "majority side took 100 events within {:?} of the cut",
        isolated.elapsed()
    );
    // The cut-off node cannot commit anything: its writes are refused.
    let mut lonely = events_client(cluster.endpoint(cut)).await;
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| chronos_api::Router::new(4).route(k, "") == 0)
        .unwrap();
    let ev = chronos_proto::v1::Event {
        key,
        ..event("net", "minority", b"")
    };
    let mut req = tonic::Request::new(publish_req(ev));
    req.set_timeout(Duration::from_secs(30));
    let err = lonely
        .publish(req)
        .await
        .expect_err("an isolated node cannot ack");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    let context = || {
        format!(
            "during the partition; gateway log:\n{}",
            cluster.log(gateway)
        )
    };
    wait_all(&seen, &acked, Duration::from_secs(30), context).await;

    cluster.heal();
    wait_caught_up(&cluster, cut, gateway, Duration::from_secs(60)).await;
    consumer.abort();
    assert_none_early(&seen, &acked);
    let ids = replay_ids(cluster.endpoint(cut), "net").await;
    for id in acked.keys() {
        assert!(ids.contains(id), "{id} lost after healing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_of_three_every_node_serves_every_partition() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        replication_factor: 2,
        partitions: 6,
        ..Options::default()
    };
    let cluster = Cluster::start(dir.path(), opts);
    let status = cluster.status(2).await;
    let mut holds = [0usize; 4];
    for p in &status.partitions {
        assert_eq!(
            p.voters.len(),
            2,
            "partition {}: {:?}",
            p.partition,
            p.voters
        );
        assert!(
            p.leader.is_some(),
            "partition {} has no leader",
            p.partition
        );
        for &v in &p.voters {
            holds[v as usize] += 1;
        }
    }
    // Some node does not hold some partition, so requests must hop.
    assert!(
        holds[1..].iter().any(|&n| n < 6),
        "every node holds everything: {holds:?}"
    );

    // Publish through every node, consume through one, cancel and describe through others.
    let mut member = Member::join(cluster.node(3), subscribe_req("g", "rf2", 100)).await;
    let due = now_ms() + 800;
    let mut want = BTreeSet::new();
    for via in 1..=3u64 {
        let events: Vec<_> = (0..20)
            .map(|i| chronos_proto::v1::Event {
                schedule_ts: due,
                ..event("rf2", &format!("v{via}-{i}"), b"")
            })
            .collect();
        let resp = events_client(cluster.endpoint(via))
            .await
            .publish_batch(PublishBatchRequest { events })
            .await
            .unwrap_or_else(|e| panic!("publish via node {via}: {e:?}"))
            .into_inner();
        want.extend(resp.results.into_iter().map(|r| r.message_id));
    }
    let later = chronos_proto::v1::Event {
        schedule_ts: now_ms() + 3_600_000,
        ..event("rf2", "to-cancel", b"")
    };
    events_client(cluster.endpoint(1))
        .await
        .publish(publish_req(later))
        .await
        .expect("publish");
    for via in [2u64, 3] {
        let r = events_client(cluster.endpoint(via))
            .await
            .cancel(chronos_proto::v1::CancelRequest {
                topic: "rf2".into(),
                message_id: "to-cancel".into(),
                key: String::new(),
            })
            .await;
        assert!(r.is_ok(), "cancel via node {via}: {r:?}");
    }
    // A batch spread over every partition, cancelled through a node that
    // does not hold them all: each share goes to its leader.
    let events: Vec<_> = (0..30)
        .map(|i| chronos_proto::v1::Event {
            schedule_ts: now_ms() + 3_600_000,
            ..event("rf2", &format!("c{i}"), b"")
        })
        .collect();
    events_client(cluster.endpoint(1))
        .await
        .publish_batch(PublishBatchRequest { events })
        .await
        .expect("publish the batch to cancel");
    let via = 1 + holds[1..].iter().position(|&n| n < 6).unwrap() as u64;
    let cancels = (0..31)
        .map(|i| chronos_proto::v1::CancelRequest {
            topic: "rf2".into(),
            message_id: format!("c{i}"),
            key: String::new(),
        })
        .collect();
    let results = events_client(cluster.endpoint(via))
        .await
        .cancel_batch(chronos_proto::v1::CancelBatchRequest { cancels })
        .await
        .unwrap_or_else(|e| panic!("cancel batch via node {via}: {e:?}"))
        .into_inner()
        .results;
    let statuses: Vec<_> = results.iter().map(|r| r.status()).collect();
    let mut want_statuses = vec![chronos_proto::v1::CancelStatus::Cancelled; 30];
    want_statuses.push(chronos_proto::v1::CancelStatus::NotFound);
    assert_eq!(statuses, want_statuses, "{results:?}");
    let mut got = BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(20);
    while got.len() < want.len() && Instant::now() < until {
        let Some(d) = member.next_within(Duration::from_secs(1)).await else {
            continue;
        };
        assert!(now_ms() >= d.due_ts, "delivered early");
        member.ack(&[d.delivery_id.as_str()]).await;
        got.insert(d.event.unwrap().message_id);
    }
    assert_eq!(got, want);
    let topics = cluster
        .admin(1)
        .await
        .list_topics(chronos_proto::v1::ListTopicsRequest {})
        .await
        .expect("topics via node 1")
        .into_inner()
        .topics;
    let rf2 = topics
        .iter()
        .find(|t| t.name == "rf2")
        .expect("topic listed");
    assert_eq!(
        rf2.pending, 0,
        "the cancelled event is not pending: {topics:?}"
    );
}
