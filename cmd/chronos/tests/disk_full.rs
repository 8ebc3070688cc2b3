//! A full disk makes publishes fail with RESOURCE_EXHAUSTED, saying so —
//! never an ack for data that is not on disk — and after space is freed and the
//! node restarted, every acked event is there. Before it comes to that, a disk
//! under `limits.min_free_disk` refuses new events only: schedules fire,
//! deliveries and acks go on, and publishing resumes, without a restart, once
//! space is freed.
//!
//! Needs root to mount a small tmpfs; where mounting is not allowed the test
//! says so and passes without running (CI runs as root).

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use chronos_proto::v1::schedule::Recurrence;
use chronos_proto::v1::{CreateScheduleRequest, Schedule};
use common::{batch_req, event, now_ms, replay_all, subscribe_req, Member, Server};
use tonic::Code;

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    fn grow(&self, size: &str) {
        let s = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(s.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

const ARGS: [&str; 4] = ["--partitions", "2", "--segment-size", "1MiB"];

/// A tmpfs of `size` under `dir` and the data directory in it; None (the
/// test then passes without running) where mounting is not allowed.
fn small_disk(dir: &std::path::Path, size: &str) -> Option<(Tmpfs, std::path::PathBuf)> {
    let mnt = dir.join("mnt");
    let Some(fs) = Tmpfs::mount(&mnt, size) else {
        eprintln!("SKIPPED: cannot mount tmpfs here (not root?)");
        return None;
    };
    Some((fs, mnt.join("data")))
}

/// Restarts the node on `data` and checks that every `acked` event of
/// `topic` is stored.
async fn restart_and_find(
    data: &std::path::Path,
    env: &[(&str, &str)],
    topic: &str,
    acked: &HashSet<String>,
) {
    let server = Server::start_with_env(data, &ARGS, env);
    let mut c = server.events().await;
    let stored: HashSet<String> = replay_all(&mut c, topic)
        .await
        .into_iter()
        .map(|e| e.event.unwrap().message_id)
        .collect();
    let missing: Vec<_> = acked.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} acked events lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}

#[tokio::test]
async fn disk_full_fails_publishes_and_loses_no_acked_event() {
    let dir = tempfile::tempdir().unwrap();
    let Some((fs, data)) = small_disk(dir.path(), "24m") else {
        return;
    };
    let args = ARGS;
    // No reserve: this is about the disk filling after all.
    let env = [("CHRONOS_LIMITS__MIN_FREE_DISK", "0")];
    let mut server = Server::start_with_env(&data, &args, &env);
    let mut c = server.events().await;

    let (mut acked, status) = fill(&mut c, "full", "r").await;
    // The full disk is told apart by the error's type wherever it struck
    // (node log, history, RocksDB), also when the write's answer was
    // dropped before Raft recorded why its group stopped.
    assert!(
        status.code() == Code::ResourceExhausted && status.message().contains("No space left"),
        "disk full answered {:?}: {}",
        status.code(),
        status.message()
    );
    eprintln!(
        "disk full answered {:?}: {}",
        status.code(),
        status.message()
    );
    // A small publish may still fit (a failed write is rolled back); if it is
    // acknowledged it must be durable like any other.
    match c
        .publish_batch(batch_req(vec![event("full", "after-full", b"x")]))
        .await
    {
        Ok(_) => {
            acked.insert("after-full".to_string());
        }
        Err(s) => assert!(
            matches!(s.code(), Code::ResourceExhausted | Code::Unavailable),
            "{s:?}"
        ),
    }
    // Only a restart brings the partitions back: a liveness probe says so
    // (once Raft has recorded why the group stopped).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = server.http_get("/health").unwrap();
        if code == 503 && body.contains("the disk is full") {
            break;
        }
        assert!(Instant::now() < deadline, "/health answered {code}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill9();

    fs.grow("256m");
    restart_and_find(&data, &env, "full", &acked).await;
    assert!(acked.len() > 100, "only {} acked before full", acked.len());
}

/// Publishes batches of 16 events of 16 KiB until one is refused; returns
/// the acknowledged ids and the refusal.
async fn fill(
    c: &mut chronos_proto::v1::event_service_client::EventServiceClient<tonic::transport::Channel>,
    topic: &str,
    prefix: &str,
) -> (HashSet<String>, tonic::Status) {
    let payload = vec![b'z'; 16 << 10];
    let mut acked = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for round in 0.. {
        assert!(Instant::now() < deadline, "publishing was never refused");
        let ids: Vec<String> = (0..16).map(|i| format!("{prefix}{round}-{i}")).collect();
        let events = ids.iter().map(|id| event(topic, id, &payload)).collect();
        match c.publish_batch(batch_req(events)).await {
            Ok(_) => acked.extend(ids),
            Err(status) => return (acked, status),
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_under_the_reserve_refuses_new_events_only_and_resumes_when_freed() {
    let dir = tempfile::tempdir().unwrap();
    let Some((fs, data)) = small_disk(dir.path(), "160m") else {
        return;
    };
    let args = ARGS;
    let env = [
        ("CHRONOS_LIMITS__MIN_FREE_DISK", "64MiB"),
        ("CHRONOS_WAL__RAFT_LOG_FILE_BYTES", "4MiB"),
    ];
    let mut server = Server::start_with_env(&data, &args, &env);
    let mut c = server.events().await;
    assert_eq!(server.metric("chronos_disk_low"), 0.0);

    // A schedule firing every second, and a member taking its occurrences.
    c.create_schedule(CreateScheduleRequest {
        schedule: Some(Schedule {
            schedule_id: "tick".into(),
            topic: "ticks".into(),
            payload: b"t".to_vec().into(),
            recurrence: Some(Recurrence::EveryMs(1000)),
            ..Default::default()
        }),
    })
    .await
    .expect("create_schedule");
    let mut member = Member::join(&server, subscribe_req("g", "ticks", 100)).await;

    let (mut acked, refused) = fill(&mut c, "fill", "a").await;
    let refused_at = now_ms();
    assert!(
        refused.code() == Code::ResourceExhausted
            && refused.message().contains("limits.min_free_disk"),
        "a low disk answered {:?}: {}",
        refused.code(),
        refused.message()
    );
    assert!(
        acked.len() > 100,
        "only {} acked before refusal",
        acked.len()
    );
    assert_eq!(server.metric("chronos_disk_low"), 1.0);
    // Refused, not failed: the partitions still lead and have their logs.
    assert_eq!(server.http_get("/ready").unwrap().0, 200);
    let refused_again = c
        .create_schedule(CreateScheduleRequest {
            schedule: Some(Schedule {
                schedule_id: "another".into(),
                topic: "ticks".into(),
                recurrence: Some(Recurrence::EveryMs(1000)),
                ..Default::default()
            }),
        })
        .await
        .expect_err("a new schedule while the disk is low");
    assert_eq!(
        refused_again.code(),
        Code::ResourceExhausted,
        "{refused_again:?}"
    );

    // Occurrences still fire and are delivered and acked.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = 0;
    while after < 2 {
        let wait = deadline
            .checked_duration_since(Instant::now())
            .expect("no occurrence delivered while the disk was low");
        let d = member.next(wait).await;
        let ev = d.event.clone().unwrap();
        if ev.schedule_ts > refused_at {
            after += 1;
        }
        let answer = member.ack(&[&d.delivery_id]).await;
        assert_eq!(answer.acked, 1, "{answer:?}");
    }

    // Space freed: new events are taken again, with no restart.
    fs.grow("512m");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c
            .publish_batch(batch_req(vec![event("fill", "after", b"x")]))
            .await
        {
            Ok(_) => break,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(
                    Instant::now() < deadline,
                    "still refused after space was freed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    acked.insert("after".into());
    assert_eq!(server.metric("chronos_disk_low"), 0.0);

    server.kill9();
    restart_and_find(&data, &env, "fill", &acked).await;
}
