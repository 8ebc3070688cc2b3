//! A full disk makes publishes fail with RESOURCE_EXHAUSTED, saying so —
//! never an ack for data that is not on disk — and after space is freed and the
//! node restarted, every acked event is there.
//!
//! Needs root to mount a small tmpfs; where mounting is not allowed the test
//! says so and passes without running (CI runs as root).

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{batch_req, event, replay_all, Server};
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

#[tokio::test]
async fn disk_full_fails_publishes_and_loses_no_acked_event() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(fs) = Tmpfs::mount(&mnt, "24m") else {
        eprintln!("SKIPPED: cannot mount tmpfs here (not root?)");
        return;
    };
    let data = mnt.join("data");
    let args = ["--partitions", "2", "--segment-size", "1MiB"];
    let mut server = Server::start(&data, &args);
    let mut c = server.events().await;

    let payload = vec![b'z'; 16 << 10];
    let mut acked = HashSet::new();
    let mut failure = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    'fill: for round in 0.. {
        assert!(Instant::now() < deadline, "disk never filled");
        let ids: Vec<String> = (0..16).map(|i| format!("r{round}-{i}")).collect();
        let events = ids.iter().map(|id| event("full", id, &payload)).collect();
        match c.publish_batch(batch_req(events)).await {
            Ok(_) => acked.extend(ids),
            Err(status) => {
                failure = Some(status);
                break 'fill;
            }
        }
    }
    // The full disk is told apart by the error's type wherever it struck
    // (node log, history, RocksDB), also when the write's answer was
    // dropped before Raft recorded why its group stopped.
    let status = failure.unwrap();
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
    server.kill9();

    fs.grow("256m");
    let server = Server::start(&data, &args);
    let mut c = server.events().await;
    let stored: HashSet<String> = replay_all(&mut c, "full")
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
    assert!(acked.len() > 100, "only {} acked before full", acked.len());
}
