//! A replay reads on a thread of its own at the lowest CPU priority, so a
//! long replay takes CPU from firing only when the cores have it to spare,
//! and still delivers everything it was asked for; a node reads at most
//! `limits.max_replays` replays at once.

mod common;

use std::time::{Duration, Instant};

use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{replay_request::Range, OffsetRange, ReplayEvent, ReplayRequest};
use common::{event, now_ms, publish_ok, Server};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// Events `fill` stores: 4 MiB, more than the reader's channel and HTTP/2's
/// windows hold, so a replay not read from keeps its reader waiting.
const STORED: usize = 4_000;

async fn fill(c: &mut EventServiceClient<Channel>) {
    let due = now_ms() + 3_600_000;
    let payload = vec![b'r'; 1024];
    for chunk in 0..STORED / 500 {
        let events = (0..500)
            .map(|i| {
                let mut e = event("t", &format!("e{chunk}-{i}"), &payload);
                e.schedule_ts = due;
                e
            })
            .collect();
        publish_ok(c, events).await;
    }
}

/// Partition 0's replay of every event of topic `t` and its first event, or
/// the status it began with.
async fn open_replay(
    c: &mut EventServiceClient<Channel>,
) -> Result<(Streaming<ReplayEvent>, ReplayEvent), tonic::Status> {
    let req = ReplayRequest {
        topic: "t".into(),
        partition_id: Some(0),
        range: Some(Range::Offsets(OffsetRange { from: 0, to: 0 })),
        ..Default::default()
    };
    let mut stream = c.replay(req).await?.into_inner();
    let first = stream.message().await?.expect("a first event or a status");
    Ok((stream, first))
}

/// The nice value of each of `pid`'s threads whose name starts with `prefix`.
fn nice_of_threads(pid: u32, prefix: &str) -> Vec<i64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            // "tid (comm) state ppid ...": comm may hold spaces; fields after
            // it start at the 3rd, and nice is the 19th.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            if !comm.starts_with(prefix) {
                return None;
            }
            rest.split_whitespace().nth(19 - 3)?.parse().ok()
        })
        .collect()
}

#[tokio::test]
async fn a_replay_reads_at_the_lowest_priority_and_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--partitions", "1"]);
    let mut c = server.events().await;
    fill(&mut c).await;
    let (mut stream, first) = open_replay(&mut c).await.expect("a replay");
    // Not read further, the stream fills and the reader waits on it, alive.
    let deadline = Instant::now() + Duration::from_secs(20);
    let nice = loop {
        let nice = nice_of_threads(server.pid(), "replay-p0");
        if !nice.is_empty() {
            break nice;
        }
        assert!(Instant::now() < deadline, "no replay reader thread seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(nice, vec![19], "the replay reader's nice value");

    let mut offsets = vec![first.offset];
    while let Some(ev) = stream.message().await.unwrap() {
        offsets.push(ev.offset);
    }
    let expected: Vec<u64> = (0..STORED as u64).collect();
    assert_eq!(offsets, expected, "every stored event, in offset order");
    // The reader's thread ends with its replay.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !nice_of_threads(server.pid(), "replay-p").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the replay reader outlived its replay"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn replays_beyond_the_limit_are_refused_until_one_ends() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &["--partitions", "1"],
        &[("CHRONOS_LIMITS__MAX_REPLAYS", "1")],
    );
    let mut c = server.events().await;
    fill(&mut c).await;

    // Not read further, the first replay's reader waits on it, holding the
    // node's one slot.
    let (held, _) = open_replay(&mut c).await.expect("the first replay");
    let Err(status) = open_replay(&mut c).await else {
        panic!("a second replay served while the first reads");
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("limits.max_replays"),
        "{status:?}"
    );

    // Once the first replay's client goes away, its reader ends and frees
    // the slot: a replay is served again, all of it.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut stream, first) = loop {
        match open_replay(&mut c).await {
            Ok(opened) => break opened,
            Err(s) => assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the slot of a replay whose client left was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut read = 1;
    assert_eq!(first.offset, 0);
    while let Some(ev) = stream.message().await.unwrap() {
        assert_eq!(ev.offset, read);
        read += 1;
    }
    assert_eq!(read, STORED as u64, "every stored event");
}
