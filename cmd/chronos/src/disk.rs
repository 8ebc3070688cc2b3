//! The node's free disk space, measured a few times a second on a thread of
//! its own (a `statvfs` of a stalled file system must not hold a runtime
//! worker), published to the partitions, which refuse new events while it
//! is under `limits.min_free_disk`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chronos_partition::FreeSpace;
use tokio::sync::watch;

/// Between measurements. At the fastest this node writes (a few hundred
/// MB/s) the reserve must cover what lands in one interval.
const EVERY: Duration = Duration::from_millis(200);

/// Bytes an unprivileged writer may still use on the file system of `dir`.
fn available(dir: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Starts measuring `dir` against `reserve` bytes (0: never refuse). The
/// first measurement is taken before this returns, so a node that starts on
/// a nearly full disk refuses from its first request.
pub fn watch_free_space(dir: PathBuf, reserve: u64) -> watch::Receiver<FreeSpace> {
    if reserve == 0 {
        return FreeSpace::unchecked();
    }
    let mut space = FreeSpace {
        free: u64::MAX,
        reserve,
        low: false,
    };
    if let Ok(free) = available(&dir) {
        space = observe(space, free);
    }
    let (tx, rx) = watch::channel(space);
    metrics::gauge!("chronos_disk_min_free_bytes").set(reserve as f64);
    let spawned = std::thread::Builder::new()
        .name("disk-space".into())
        .spawn(move || measure(&dir, tx));
    if let Err(e) = spawned {
        tracing::warn!("not watching free disk space: starting its thread: {e}");
    }
    rx
}

fn measure(dir: &Path, tx: watch::Sender<FreeSpace>) {
    let mut failed = false;
    while !tx.is_closed() {
        std::thread::sleep(EVERY);
        match available(dir) {
            Ok(free) => {
                failed = false;
                let space = observe(*tx.borrow(), free);
                tx.send_if_modified(|s| std::mem::replace(s, space) != space);
            }
            // Keep the last verdict; say so once per run of failures.
            Err(e) if !failed => {
                failed = true;
                tracing::warn!("measuring free disk space of {}: {e}", dir.display());
            }
            Err(_) => {}
        }
    }
}

/// The state after measuring `free`, with its metrics and, when new events
/// start or stop being refused, a log line.
fn observe(before: FreeSpace, free: u64) -> FreeSpace {
    let after = before.measured(free);
    metrics::gauge!("chronos_disk_free_bytes").set(free as f64);
    metrics::gauge!("chronos_disk_low").set(if after.low { 1.0 } else { 0.0 });
    if after.low && !before.low {
        tracing::warn!("refusing new events: {after}");
    } else if before.low && !after.low {
        tracing::info!(
            "taking new events again: {} MiB free on the data directory's disk",
            free >> 20
        );
    }
    after
}
