//! Counters for metrics, kept as atomics so reading them never takes a lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the WAL's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalStats {
    /// Record bytes written since open.
    pub bytes_written_total: u64,
    /// Segment fsyncs since open.
    pub fsyncs_total: u64,
    /// Time spent in segment fsyncs since open.
    pub fsync_time_ns_total: u64,
    /// Segment files currently in the log.
    pub segment_count: u64,
    /// Current total size of the segment files.
    pub disk_bytes: u64,
    /// Successful `append` calls since open.
    pub appends_total: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatsCounters {
    pub bytes_written_total: AtomicU64,
    pub fsyncs_total: AtomicU64,
    pub fsync_time_ns_total: AtomicU64,
    pub segment_count: AtomicU64,
    pub disk_bytes: AtomicU64,
    pub appends_total: AtomicU64,
}

impl StatsCounters {
    pub fn snapshot(&self) -> WalStats {
        WalStats {
            bytes_written_total: self.bytes_written_total.load(Ordering::Relaxed),
            fsyncs_total: self.fsyncs_total.load(Ordering::Relaxed),
            fsync_time_ns_total: self.fsync_time_ns_total.load(Ordering::Relaxed),
            segment_count: self.segment_count.load(Ordering::Relaxed),
            disk_bytes: self.disk_bytes.load(Ordering::Relaxed),
            appends_total: self.appends_total.load(Ordering::Relaxed),
        }
    }
}
