//! `--server-pid`: the server's resident memory, sampled from `/proc/<pid>/status`
//! every [`SAMPLE_EVERY`] until the run stops.

use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Highest and last VmRSS seen.
pub struct RssStats {
    pub max_kib: u64,
    pub final_kib: u64,
    pub samples: u64,
}

impl RssStats {
    pub fn max_mib(&self) -> f64 {
        self.max_kib as f64 / 1024.0
    }

    pub fn final_mib(&self) -> f64 {
        self.final_kib as f64 / 1024.0
    }
}

/// VmRSS of `pid` in KiB.
fn read_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .with_context(|| format!("no VmRSS in {path}"))?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse()
        .with_context(|| format!("VmRSS {line:?} in {path}"))
}

/// Starts sampling; fails at once if `pid` cannot be read. The task ends when
/// `stop` is set, after one last sample (the "final" value), or when the process
/// goes away.
pub fn spawn(pid: u32, mut stop: watch::Receiver<bool>) -> anyhow::Result<JoinHandle<RssStats>> {
    let first = read_kib(pid)?;
    Ok(tokio::spawn(async move {
        let mut stats = RssStats {
            max_kib: first,
            final_kib: first,
            samples: 1,
        };
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.wait_for(|stop| *stop) => true,
            };
            match read_kib(pid) {
                Ok(kib) => {
                    stats.max_kib = stats.max_kib.max(kib);
                    stats.final_kib = kib;
                    stats.samples += 1;
                }
                Err(error) => {
                    crate::progress::notice(&format!("server RSS: {error:#}; sampling stopped"));
                    break;
                }
            }
            if stopping {
                break;
            }
        }
        stats
    }))
}
