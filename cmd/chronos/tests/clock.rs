//! A cluster node whose wall clock jumps ahead (libfaketime) stops leading
//! and fires nothing while it is off, says so (`/ready`, `/metrics`,
//! status), and no event reaches a consumer early, also none coming due
//! across the jump; once its clock is back it may lead again.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{ClusterStatusResponse, Event, PublishBatchRequest};
use common::cluster::{Cluster, Options};
use common::seen::{assert_none_early, collect, wait_all};
use common::{event, now_ms};

/// Debian's `faketime` package (scripts/install-deps.sh installs it).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` every 100 ms until it holds; fails with `what` at the deadline.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let until = Instant::now() + DEADLINE;
    loop {
        match check().await {
            Ok(()) => return,
            Err(last) if Instant::now() >= until => panic!("{what} within {DEADLINE:?}: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Publishes `n` events through node `via`, the first due `first_ms` from
/// now and each next `step_ms` later; records their due times in `want`.
async fn publish_due(
    cluster: &Cluster,
    via: u64,
    prefix: &str,
    n: i64,
    first_ms: i64,
    step_ms: i64,
    want: &mut BTreeMap<String, i64>,
) {
    let mut client = EventServiceClient::connect(cluster.endpoint(via))
        .await
        .unwrap();
    let now = now_ms();
    let events: Vec<Event> = (0..n)
        .map(|i| Event {
            schedule_ts: now + first_ms + i * step_ms,
            ..event("clock", &format!("{prefix}-{i}"), b"p")
        })
        .collect();
    let resp = client
        .publish_batch(PublishBatchRequest { events })
        .await
        .unwrap_or_else(|s| panic!("publish via node {via}: {s:?}"))
        .into_inner();
    for r in resp.results {
        want.insert(r.message_id, r.due_ts);
    }
}

fn offset_of(s: &ClusterStatusResponse, id: u64) -> Option<i64> {
    s.nodes
        .iter()
        .find(|n| n.id == id)
        .and_then(|n| n.clock_offset_ms)
}

fn leaders(s: &ClusterStatusResponse) -> Vec<Option<u64>> {
    s.partitions.iter().map(|p| p.leader).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_skewed_clock_leads_nothing_and_nothing_is_early() {
    assert!(
        Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} is missing: install Debian's faketime (scripts/install-deps.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    // libfaketime re-reads this file (at most once a second), so the test can
    // move node 3's clock while it runs.
    let skew = dir.path().join("node3-skew");
    std::fs::write(&skew, "+0s").unwrap();
    let mut opts = Options {
        partitions: 6,
        ..Options::default()
    };
    let vars = [
        ("LD_PRELOAD", FAKETIME_LIB),
        ("FAKETIME_TIMESTAMP_FILE", skew.to_str().unwrap()),
        ("FAKETIME_CACHE_DURATION", "1"),
        // Timers and round trips keep the real monotonic clock.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    opts.env.insert(
        3,
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let mut cluster = Cluster::start(dir.path(), opts);
    // Node 3 leads a partition, then its clock jumps 2 s ahead.
    cluster.make_leader(3, 0).await;
    let endpoints = vec![cluster.endpoint(1), cluster.endpoint(2)];
    let (seen, consumer) = collect(endpoints, "g", "clock", 100).await;
    // Events coming due over the 2 s the clock jumps across: none may fire
    // early, on node 3 or anywhere.
    let mut want = BTreeMap::new();
    publish_due(&cluster, 1, "jump", 60, 300, 40, &mut want).await;
    std::fs::write(&skew, "+2s").unwrap();

    // Node 3 says why it is not ready, and what it measured.
    wait_until(
        "node 3 reports its clock out of bounds on /ready",
        || async {
            let (code, body) = cluster
                .node(3)
                .http_get("/ready")
                .map_err(|e| e.to_string())?;
            if code == 503 && body.contains("clock NOT within 250 ms") {
                Ok(())
            } else {
                Err(format!("{code} {body}"))
            }
        },
    )
    .await;
    let s3 = cluster.status(3).await;
    assert!(!s3.clock_within_bounds, "{s3:?}");
    assert_eq!(s3.max_clock_offset_ms, 250);
    for peer in [1, 2] {
        let off = offset_of(&s3, peer).expect("node 3 measured its peers");
        assert!(
            (-2_500..=-1_500).contains(&off),
            "node {peer} seen from node 3: {off} ms"
        );
    }
    assert_eq!(cluster.node(3).metric("chronos_clock_within_bounds"), 0.0);
    // Node 1 sees the jump at its next probe of node 3, and stays in bounds.
    wait_until("node 1 measuring node 3 2 s ahead", || async {
        let s1 = cluster.status(1).await;
        match offset_of(&s1, 3) {
            Some(off) if (1_500..=2_500).contains(&off) && s1.clock_within_bounds => Ok(()),
            _ => Err(format!("{s1:?}")),
        }
    })
    .await;
    assert_eq!(cluster.node(1).metric("chronos_clock_within_bounds"), 1.0);

    // Every partition is led, by node 1 or 2.
    wait_until("every partition led by node 1 or 2", || async {
        let l = leaders(&cluster.status(1).await);
        if l.iter().all(|l| matches!(l, Some(1 | 2))) {
            Ok(())
        } else {
            Err(format!("leaders {l:?}"))
        }
    })
    .await;

    // Events published through the skewed node (forwarded) and through node
    // 1, due over the next 2.5 s by the real clock, all reach a consumer and
    // none before its due time.
    for via in [3, 1] {
        publish_due(&cluster, via, &format!("via{via}"), 40, 500, 50, &mut want).await;
    }
    assert_eq!(want.len(), 140);
    wait_all(&seen, &want, DEADLINE, || cluster.log(3)).await;
    assert_none_early(&seen, &want);
    consumer.abort();
    let l = leaders(&cluster.status(1).await);
    assert!(!l.contains(&Some(3)), "node 3 led while skewed: {l:?}");

    // The clock is set right: node 3 is within bounds and ready again.
    std::fs::write(&skew, "+0s").unwrap();
    wait_until("node 3 ready once its clock is right", || async {
        let (code, body) = cluster
            .node(3)
            .http_get("/ready")
            .map_err(|e| e.to_string())?;
        if code == 200 {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    })
    .await;
    assert!(cluster.status(3).await.clock_within_bounds);
    assert!(cluster.log(3).contains("leading again"));
}
