//! Keeping a partition's logs short, on every replica. Every
//! [`COMPACT_INTERVAL`]: fsync the history and drop from the node's Raft log
//! what it now holds durably. Every retention interval: delete the history's
//! segments that retention allows and the last snapshot covers — first
//! openraft purges its (logical) log up to the last of them, then, once
//! purged, they are deleted. The file work runs on blocking threads; the
//! owner is told when it is done, and runs one job at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chronos_raftlog::RaftLog;
use chronos_wal::Retention;
use openraft::async_runtime::watch::WatchReceiver;

use super::{Completion, Completions, Tick};
use crate::history::History;
use crate::types::Raft;

/// How often the history is fsynced and the node log compacted behind it.
const COMPACT_INTERVAL: Duration = Duration::from_secs(1);

/// Why the node log could not be compacted behind the history.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CompactError {
    #[error("history fsync: {0}")]
    History(#[from] chronos_wal::WalError),
    #[error("node log: {0}")]
    Log(#[from] chronos_raftlog::RaftLogError),
}

/// A finished upkeep job.
pub(crate) enum Job {
    Compacted(Result<Result<(), CompactError>, tokio::task::JoinError>),
    Retained(
        Result<Result<chronos_wal::RemovedSegments, chronos_wal::WalError>, tokio::task::JoinError>,
    ),
}

pub(crate) struct Upkeep {
    history: History,
    raft_log: Arc<RaftLog>,
    retention: Retention,
    retention_every: Duration,
    compact_at: Instant,
    retention_at: Instant,
    /// A job is running.
    busy: bool,
}

impl Upkeep {
    pub fn new(
        history: History,
        raft_log: Arc<RaftLog>,
        retention: Retention,
        retention_every: Duration,
    ) -> Upkeep {
        let now = Instant::now();
        Upkeep {
            history,
            raft_log,
            retention,
            retention_every,
            compact_at: now + COMPACT_INTERVAL,
            retention_at: now + retention_every,
            busy: false,
        }
    }

    pub fn next_tick(&self) -> (Instant, Tick) {
        if self.busy {
            // Woken by the job's completion instead.
            return (Instant::now() + Duration::from_secs(3600), Tick::Compact);
        }
        if self.retention_at < self.compact_at {
            (self.retention_at, Tick::Retention)
        } else {
            (self.compact_at, Tick::Compact)
        }
    }

    pub fn compact(&mut self, partition: u32, completions: &mut Completions) {
        self.compact_at = Instant::now() + COMPACT_INTERVAL;
        if self.busy {
            return;
        }
        self.busy = true;
        let (history, raft_log) = (self.history.clone(), self.raft_log.clone());
        let job = tokio::task::spawn_blocking(move || -> Result<(), CompactError> {
            if let Some(synced) = history.sync()? {
                raft_log.compact(partition, synced)?;
            }
            Ok(())
        });
        completions.push_job(async move { Completion::Upkeep(Job::Compacted(job.await)) });
    }

    pub async fn retention(&mut self, partition: u32, raft: &Raft, completions: &mut Completions) {
        self.retention_at = Instant::now() + self.retention_every;
        if self.busy {
            return;
        }
        let (snapshot, purged) = {
            let m = raft.metrics().borrow_watched().clone();
            (m.snapshot.map(|l| l.index), m.purged.map(|l| l.index))
        };
        let Some(snapshot) = snapshot else {
            return;
        };
        if let Some(upto) = self
            .history
            .wal()
            .retention_point(&self.retention, snapshot)
        {
            if purged.is_none_or(|p| p < upto) {
                if let Err(e) = raft.trigger().purge_log(upto).await {
                    tracing::warn!(partition, "raft log purge: {e}");
                }
            }
        }
        let Some(purged) = purged else {
            return;
        };
        self.busy = true;
        let (wal, retention) = (self.history.wal().clone(), self.retention);
        let job = tokio::task::spawn_blocking(move || wal.remove_segments(&retention, purged));
        completions.push_job(async move { Completion::Upkeep(Job::Retained(job.await)) });
    }

    pub fn finished(&mut self, partition: u32, job: Job) {
        self.busy = false;
        match job {
            Job::Compacted(Ok(Ok(()))) => {}
            Job::Compacted(Ok(Err(e))) => tracing::warn!(partition, "raft log compaction: {e}"),
            Job::Compacted(Err(e)) => tracing::warn!(partition, "raft log compaction task: {e}"),
            Job::Retained(Ok(Ok(removed))) => {
                tracing::debug!(partition, ?removed, "history retention")
            }
            Job::Retained(Ok(Err(e))) => tracing::warn!(partition, "history retention: {e}"),
            Job::Retained(Err(e)) => tracing::warn!(partition, "history retention task: {e}"),
        }
    }
}
