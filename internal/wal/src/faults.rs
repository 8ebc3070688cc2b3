//! Test-only fault injection (fsync and write failures) and the tests that
//! use it: failure semantics cannot be provoked reliably on a real disk.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

#[derive(Debug, Default)]
pub(crate) struct Faults {
    fail_next_fsync: AtomicBool,
    /// A write that will fail: after `skip_writes` successful writes, the
    /// next one writes `prefix_bytes` and fails with `kind`.
    fail_write: Mutex<Option<WriteFault>>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteFault {
    pub skip_writes: usize,
    pub prefix_bytes: usize,
    pub kind: io::ErrorKind,
}

impl Faults {
    pub fn take_fsync_failure(&self) -> bool {
        self.fail_next_fsync.swap(false, Ordering::AcqRel)
    }

    pub fn take_write_failure(&self) -> Option<(usize, io::ErrorKind)> {
        let mut slot = self.fail_write.lock();
        let fault = (*slot)?;
        if fault.skip_writes > 0 {
            *slot = Some(WriteFault {
                skip_writes: fault.skip_writes - 1,
                ..fault
            });
            return None;
        }
        *slot = None;
        Some((fault.prefix_bytes, fault.kind))
    }

    fn arm_write(&self, skip_writes: usize, prefix_bytes: usize, kind: io::ErrorKind) {
        *self.fail_write.lock() = Some(WriteFault {
            skip_writes,
            prefix_bytes,
            kind,
        });
    }
}

mod tests {
    use super::*;
    use crate::{FsyncMode, RecordHeader, Wal, WalError, WalOptions};
    use std::sync::mpsc;
    use std::time::Duration;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn header(index: u64) -> RecordHeader {
        RecordHeader {
            term: 1,
            index,
            seq: index,
            ts_ms: index,
        }
    }

    fn append_one(
        wal: &Wal,
        index: u64,
        payload: &[u8],
    ) -> Result<mpsc::Receiver<Result<(), WalError>>, WalError> {
        let (tx, rx) = mpsc::channel();
        wal.append(
            &[(header(index), payload)],
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        Ok(rx)
    }

    fn all_indexes(wal: &Wal) -> Vec<u64> {
        let Some(first) = wal.first_index() else {
            return Vec::new();
        };
        wal.iter_from_index(first)
            .expect("iter")
            .map(|r| r.expect("record").0.index)
            .collect()
    }

    #[test]
    fn fsync_failure_fails_the_batch_and_every_later_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path(), WalOptions::default()).expect("open");
        append_one(&wal, 1, b"ok")
            .expect("append")
            .recv_timeout(DEADLINE)
            .expect("cb")
            .expect("durable");

        wal.shared
            .faults
            .fail_next_fsync
            .store(true, Ordering::SeqCst);
        let rx = append_one(&wal, 2, b"doomed").expect("append is accepted before the fsync");
        let err = rx
            .recv_timeout(DEADLINE)
            .expect("callback")
            .expect_err("fsync failed");
        assert!(matches!(err, WalError::Io { .. }), "{err:?}");
        assert_eq!(wal.durable_index(), Some(1));

        assert!(matches!(append_one(&wal, 3, b"x"), Err(WalError::Failed)));
        assert!(matches!(wal.sync(), Err(WalError::Failed)));
        assert!(matches!(wal.truncate_from(1), Err(WalError::Failed)));
        assert!(matches!(wal.close(), Err(WalError::Failed)));
    }

    #[test]
    fn disk_full_write_keeps_kind_and_leaves_no_torn_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = WalOptions {
            fsync: FsyncMode::Always,
            ..WalOptions::default()
        };
        let wal = Wal::open(dir.path(), opts).expect("open");
        append_one(&wal, 1, &[1u8; 100]).expect("append");
        wal.shared
            .faults
            .arm_write(0, 60, io::ErrorKind::StorageFull);
        let err = append_one(&wal, 2, &[2u8; 100]).expect_err("injected ENOSPC");
        assert_eq!(err.io_kind(), Some(io::ErrorKind::StorageFull));
        // Not failed: the torn bytes were cut and the log goes on.
        append_one(&wal, 2, &[3u8; 100]).expect("append after rollback");
        wal.sync().expect("sync");
        assert_eq!(all_indexes(&wal), vec![1, 2]);
        drop(wal);
        let wal = Wal::open(dir.path(), opts).expect("reopen");
        assert_eq!(wal.recovery_report().dropped_bytes, 0);
        let records: Vec<_> = wal
            .iter_from_index(1)
            .expect("iter")
            .map(|r| r.expect("record"))
            .collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].1, vec![3u8; 100]);
    }

    #[test]
    fn failed_write_spanning_a_roll_is_undone_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = WalOptions {
            segment_bytes: 300,
            index_interval_bytes: 64,
            fsync: FsyncMode::Always,
        };
        let wal = Wal::open(dir.path(), opts).expect("open");
        append_one(&wal, 1, &[0u8; 100]).expect("append");
        // Record 2 fits in segment 1; record 3 forces a roll. The first
        // chunk's write succeeds, the write into the new segment fails.
        let batch: Vec<(RecordHeader, &[u8])> =
            vec![(header(2), &[0u8; 100]), (header(3), &[0u8; 100])];
        wal.shared
            .faults
            .arm_write(1, 10, io::ErrorKind::StorageFull);
        let err = wal.append(&batch, Box::new(|_| {})).expect_err("injected");
        assert_eq!(err.io_kind(), Some(io::ErrorKind::StorageFull));
        assert_eq!(wal.last_header().map(|h| h.index), Some(1));
        wal.append(&batch, Box::new(|_| {}))
            .expect("retry succeeds");
        wal.sync().expect("sync");
        assert_eq!(all_indexes(&wal), vec![1, 2, 3]);
        assert_eq!(wal.stats().segment_count, 2);
        drop(wal);
        let wal = Wal::open(dir.path(), opts).expect("reopen");
        assert_eq!(wal.recovery_report().dropped_bytes, 0);
        assert_eq!(all_indexes(&wal), vec![1, 2, 3]);
    }
}
