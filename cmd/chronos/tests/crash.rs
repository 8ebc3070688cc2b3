//! kill -9 in the middle of publishing: everything acked survives, exactly once,
//! and deduplication still holds after the restart.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{batch_req, event, publish_ok, publish_req, replay_all, Server};

/// (partition, offset) the server acknowledged for each message id.
type Acked = Arc<Mutex<HashMap<String, (u32, u64)>>>;

async fn publisher(endpoint: String, client_no: usize, acked: Acked, stop_at: Instant) {
    let Ok(mut c) =
        chronos_proto::v1::event_service_client::EventServiceClient::connect(endpoint).await
    else {
        return;
    };
    let mut n = 0usize;
    while Instant::now() < stop_at {
        if client_no.is_multiple_of(2) {
            let id = format!("c{client_no}-{n}");
            n += 1;
            match c
                .publish(publish_req(event("crash", &id, id.as_bytes())))
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    acked.lock().unwrap().insert(id, (r.partition, r.offset));
                }
                Err(_) => return, // the server died under us
            }
        } else {
            let ids: Vec<String> = (0..50).map(|i| format!("c{client_no}-{}", n + i)).collect();
            n += 50;
            let events = ids
                .iter()
                .map(|id| event("crash", id, id.as_bytes()))
                .collect();
            match c.publish_batch(batch_req(events)).await {
                Ok(r) => {
                    let mut a = acked.lock().unwrap();
                    for (id, res) in ids.into_iter().zip(r.into_inner().results) {
                        a.insert(id, (res.partition, res.offset));
                    }
                }
                Err(_) => return,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_publishes_survive_kill_9_exactly_once() {
    publish_kill_9_and_check(&[], false).await;
}

/// The node's Raft log in 64 KiB files with garbage collection every 50 ms,
/// and a snapshot (so a purge) every 20 entries: the kill lands among
/// collections, rewrites, compactions, purges and dead files written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_publishes_survive_kill_9_during_log_collection_and_purges() {
    publish_kill_9_and_check(
        &[
            ("CHRONOS_WAL__RAFT_LOG_FILE_BYTES", "64KiB"),
            ("CHRONOS_WAL__RETENTION_CHECK_INTERVAL", "50ms"),
            ("CHRONOS_RAFT__SNAPSHOT_EVERY_ENTRIES", "20"),
        ],
        true,
    )
    .await;
}

async fn publish_kill_9_and_check(env: &[(&str, &str)], reuses_files: bool) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Small segments so the crash also exercises segment rolls.
    let args = ["--partitions", "4", "--segment-size", "1MiB"];
    let mut server = Server::start_with_env(&data, &args, env);

    let acked: Acked = Arc::default();
    let stop_at = Instant::now() + Duration::from_secs(30);
    let clients: Vec<_> = (0..6)
        .map(|i| tokio::spawn(publisher(server.endpoint(), i, acked.clone(), stop_at)))
        .collect();

    // Kill once a good number of publishes were acked, while clients are still writing.
    let deadline = Instant::now() + Duration::from_secs(25);
    while acked.lock().unwrap().len() < 20_000 {
        assert!(
            Instant::now() < deadline,
            "only {} acked in time",
            acked.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if reuses_files {
        // The kill must land while the node log writes over dead files.
        while server.metric("chronos_raftlog_reused_files_total") < 10.0 {
            assert!(Instant::now() < deadline, "no dead node-log files reused");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    server.kill9();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 20_000);
    eprintln!("{} publishes acked before kill -9", acked.len());

    let server = Server::start_with_env(&data, &args, env);
    let mut c = server.events().await;
    let stored = replay_all(&mut c, "crash").await;

    let mut seen: HashMap<String, (u32, u64)> = HashMap::new();
    for ev in &stored {
        let id = ev.event.as_ref().unwrap().message_id.clone();
        assert_eq!(
            ev.event.as_ref().unwrap().payload.as_ref(),
            id.as_bytes(),
            "payload intact"
        );
        let prev = seen.insert(id.clone(), (ev.partition, ev.offset));
        assert!(
            prev.is_none(),
            "{id} stored twice: {prev:?} and ({}, {})",
            ev.partition,
            ev.offset
        );
    }
    for (id, at) in &acked {
        assert_eq!(
            seen.get(id),
            Some(at),
            "acked {id} at {at:?} missing or moved after restart"
        );
    }

    // Dedup holds across the crash: republishing acked ids creates nothing.
    let sample: Vec<(&String, &(u32, u64))> = acked.iter().take(500).collect();
    let events = sample
        .iter()
        .map(|(id, _)| event("crash", id, b"again"))
        .collect();
    let r = publish_ok(&mut c, events).await;
    for ((id, at), res) in sample.iter().zip(&r.results) {
        assert!(res.duplicate, "{id} not deduplicated after restart");
        assert_eq!((res.partition, res.offset), **at);
    }
    assert_eq!(
        replay_all(&mut c, "crash").await.len(),
        stored.len(),
        "republish stored nothing"
    );
}
