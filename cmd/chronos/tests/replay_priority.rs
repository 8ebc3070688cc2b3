//! A replay reads on a thread of its own at the lowest CPU priority, so a
//! long replay takes CPU from firing only when the cores have it to spare,
//! and still delivers everything it was asked for.

mod common;

use std::time::{Duration, Instant};

use chronos_proto::v1::{replay_request::Range, OffsetRange, ReplayRequest};
use common::{event, now_ms, publish_ok, Server};

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
    let due = now_ms() + 3_600_000;
    // 4 MiB: more than the reader's channel and HTTP/2's windows hold.
    let total = 4_000;
    let payload = vec![b'r'; 1024];
    for chunk in 0..total / 500 {
        let events = (0..500)
            .map(|i| {
                let mut e = event("t", &format!("e{chunk}-{i}"), &payload);
                e.schedule_ts = due;
                e
            })
            .collect();
        publish_ok(&mut c, events).await;
    }

    let req = ReplayRequest {
        topic: "t".into(),
        partition_id: Some(0),
        range: Some(Range::Offsets(OffsetRange { from: 0, to: 0 })),
        ..Default::default()
    };
    let mut stream = c.replay(req).await.expect("replay").into_inner();
    let first = stream.message().await.unwrap().expect("a first event");
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
    let expected: Vec<u64> = (0..total as u64).collect();
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
