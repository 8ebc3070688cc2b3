//! Snapshots, logical purge and WAL retention: old segments go away, nothing
//! applied is lost, the node restarts from the snapshot plus the remaining log,
//! and deduplication still covers events whose log segments were deleted.

mod common;

use std::time::{Duration, Instant};

use common::{batch_req, event, replay_all, Server};

fn gauge_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn old_segments_are_retired_and_restart_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--partitions", "1", "--segment-size", "64KiB"];
    let env = [
        ("CHRONOS_RAFT__SNAPSHOT_EVERY_ENTRIES", "20"),
        ("CHRONOS_WAL__RETENTION_BYTES", "256KiB"),
        ("CHRONOS_WAL__RETENTION_CHECK_INTERVAL", "200ms"),
    ];
    let mut server = Server::start_with_env(&data, &args, &env);
    let mut c = server.events().await;

    let payload = vec![b'r'; 1024];
    for round in 0..100 {
        let events = (0..10)
            .map(|i| event("ret", &format!("r{round}-{i}"), &payload))
            .collect();
        c.publish_batch(batch_req(events)).await.unwrap();
    }
    // ~1 MiB written in 64 KiB segments; retention keeps ~256 KiB of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, m) = server.http_get("/metrics").unwrap();
        let disk = gauge_sum(&m, "chronos_wal_disk_bytes");
        if disk > 0.0 && disk <= 400.0 * 1024.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "WAL never shrank: {disk} bytes on disk\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    server.kill9();
    let server = Server::start_with_env(&data, &args, &env);
    let mut c = server.events().await;
    // Replay serves what is retained: the newest events, in offset order, ending at 999.
    let kept = replay_all(&mut c, "ret").await;
    assert!(
        !kept.is_empty() && kept.len() < 1000,
        "retention kept {}",
        kept.len()
    );
    let status = server
        .admin()
        .await
        .list_partitions(chronos_proto::v1::ListPartitionsRequest {})
        .await
        .unwrap();
    assert_eq!(
        kept.last().unwrap().offset,
        999,
        "{status:?}\n{}",
        server.log()
    );
    assert!(kept.windows(2).all(|w| w[1].offset == w[0].offset + 1));
    // Dedup state lives in the state machine, not the log: still exact.
    let r = c
        .publish_batch(batch_req(vec![event("ret", "r0-0", b"again")]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.results[0].duplicate,
        "dedup lost with the retired segment"
    );
    assert_eq!(r.results[0].offset, 0);
    let fresh = c
        .publish_batch(batch_req(vec![event("ret", "new", b"")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        fresh.results[0].offset, 1000,
        "offsets continue after restart"
    );
}

/// Receives `n` deliveries, acking each; returns their message ids.
async fn drain(m: &mut common::Member, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let d = m.next(Duration::from_secs(10)).await;
        m.ack(&[&d.delivery_id]).await;
        ids.push(d.event.unwrap().message_id);
    }
    ids
}

#[tokio::test]
async fn fire_logs_keep_what_a_group_still_needs_and_trim_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("CHRONOS_WAL__RETENTION_AGE", "1s"),
        ("CHRONOS_WAL__RETENTION_CHECK_INTERVAL", "200ms"),
    ];
    let server = Server::start_with_env(&dir.path().join("data"), &["--partitions", "2"], &env);
    // "slow" exists but has no member: it pins everything it has not had.
    drop(common::Member::join(&server, common::subscribe_req("slow", "t", 100)).await);
    let mut fast = common::Member::join(&server, common::subscribe_req("fast", "t", 100)).await;
    let mut c = server.events().await;
    let events = (0..10).map(|i| event("t", &format!("e{i}"), b"")).collect();
    c.publish_batch(batch_req(events)).await.expect("publish");
    assert_eq!(drain(&mut fast, 10).await.len(), 10);
    // Well past the retention age, with several trim rounds: nothing may go.
    let pinned_until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < pinned_until {
        assert_eq!(server.metric("chronos_fired_trimmed_total"), 0.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut slow = common::Member::join(&server, common::subscribe_req("slow", "t", 100)).await;
    assert_eq!(
        drain(&mut slow, 10).await.len(),
        10,
        "slow gets all it missed"
    );
    server
        .wait_metric("chronos_fired_trimmed_total", 10.0, Duration::from_secs(10))
        .await;
    // A group starting from EARLIEST now finds nothing retained.
    let mut req = common::subscribe_req("new", "t", 100);
    req.start = chronos_proto::v1::StartPosition::Earliest as i32;
    let mut new = common::Member::join(&server, req).await;
    assert_eq!(new.next_within(Duration::from_millis(300)).await, None);
}
