//! Unit tests of the whole log: reopen, rolling, gc, torn tails.

use std::sync::mpsc;
use std::time::Duration;

use crate::{FsyncMode, RaftLog, RaftLogError, RaftLogOptions};

const DEADLINE: Duration = Duration::from_secs(10);

fn opts(file_bytes: u64) -> RaftLogOptions {
    RaftLogOptions {
        file_bytes,
        fsync: FsyncMode::Always,
        max_files_before_rewrite: 2,
        spare_files: 0,
    }
}

fn payload(p: u32, i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (p as u64 * 31 + i * 7 + k as u64) as u8)
        .collect()
}

/// Appends `first..=last` of partition `p` and waits until durable.
fn append(log: &RaftLog, p: u32, first: u64, last: u64, len: usize) {
    let bodies: Vec<Vec<u8>> = (first..=last).map(|i| payload(p, i, len)).collect();
    let entries: Vec<(u64, &[u8])> = (first..=last).zip(bodies.iter().map(|b| &b[..])).collect();
    let (tx, rx) = mpsc::channel();
    log.append(p, &entries, Box::new(move |r| drop(tx.send(r))))
        .expect("append");
    rx.recv_timeout(DEADLINE)
        .expect("callback")
        .expect("durable");
}

fn check(log: &RaftLog, p: u32, range: Option<(u64, u64)>, len: usize) {
    assert_eq!(log.range(p), range, "partition {p}");
    let got = log.read(p, 0, u64::MAX).expect("read");
    let want: Vec<(u64, Vec<u8>)> = match range {
        Some((a, b)) => (a..=b).map(|i| (i, payload(p, i, len))).collect(),
        None => Vec::new(),
    };
    assert_eq!(got, want, "partition {p}");
}

#[test]
fn append_read_truncate_purge_vote_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = RaftLog::open(dir.path(), opts(1 << 20)).expect("open");
        append(&log, 1, 1, 10, 100);
        append(&log, 2, 5, 7, 50);
        log.truncate(1, 8).expect("truncate");
        log.purge(1, 3, b"meta-1").expect("purge");
        log.purge(3, 100, b"meta-3").expect("purge past end");
        log.save_vote(2, b"vote-2").expect("vote");
        assert!(matches!(
            log.append(1, &[(9, &b"x"[..])], Box::new(|_| {})),
            Err(RaftLogError::InvalidAppend { .. })
        ));
        // A lower purge point keeps what was dropped and replaces the meta.
        log.purge(1, 2, b"meta-1b").expect("purge below");
        assert_eq!(log.purged(1), Some((3, b"meta-1b".to_vec())));
        // Compaction drops more and keeps the meta; below the point it is a no-op.
        log.compact(2, 5).expect("compact");
        log.compact(2, 4).expect("compact below");
        assert_eq!(log.purged(2), Some((5, Vec::new())));
        assert_eq!(log.read(1, 5, 7).expect("read").len(), 2);
        log.sync().expect("sync");
    }
    let log = RaftLog::open(dir.path(), opts(1 << 20)).expect("reopen");
    check(&log, 1, Some((4, 7)), 100);
    check(&log, 2, Some((6, 7)), 50);
    check(&log, 3, None, 0);
    assert_eq!(log.purged(1), Some((3, b"meta-1b".to_vec())));
    assert_eq!(log.purged(2), Some((5, Vec::new())));
    assert_eq!(log.purged(3), Some((100, b"meta-3".to_vec())));
    assert_eq!(log.vote(2), Some(b"vote-2".to_vec()));
    assert_eq!(log.partitions(), vec![1, 2, 3]);
    assert!(log
        .append(3, &[(100, &b"x"[..])], Box::new(|_| {}))
        .is_err());
    append(&log, 3, 101, 101, 10);
    check(&log, 3, Some((101, 101)), 10);
}

#[test]
fn forget_drops_entries_and_purge_point_but_keeps_the_vote() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = RaftLog::open(dir.path(), opts(4096)).expect("open");
        append(&log, 1, 1, 40, 100);
        append(&log, 2, 1, 5, 10);
        log.purge(1, 10, b"meta-1").expect("purge");
        log.save_vote(1, b"vote-1").expect("vote");
        log.forget(1).expect("forget");
        check(&log, 1, None, 0);
        assert_eq!(log.purged(1), None);
        assert_eq!(log.vote(1), Some(b"vote-1".to_vec()));
        // Opened again here, the partition starts at any index.
        append(&log, 1, 1, 3, 20);
        log.forget(1).expect("forget again");
        log.forget(9).expect("forget what was never held");
    }
    // The files written before the forget are still there: replay drops them.
    let log = RaftLog::open(dir.path(), opts(4096)).expect("reopen");
    check(&log, 1, None, 0);
    assert_eq!(log.purged(1), None);
    assert_eq!(log.vote(1), Some(b"vote-1".to_vec()));
    check(&log, 2, Some((1, 5)), 10);
    append(&log, 1, 7, 8, 20);
    check(&log, 1, Some((7, 8)), 20);
}

#[test]
fn rolling_keeps_meta_and_gc_deletes_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = RaftLog::open(dir.path(), opts(4096)).expect("open");
    log.save_vote(7, b"v7").expect("vote");
    log.purge(7, 0, b"p7").expect("purge");
    append(&log, 1, 1, 4, 1000); // a lagging partition pinning the oldest file
    for round in 0..20u64 {
        append(&log, 7, round * 3 + 1, round * 3 + 3, 1500);
    }
    let files_before = log.stats().files;
    assert!(files_before > 10, "{files_before} files");
    log.purge(7, 57, b"p7b").expect("purge");
    let report = log.gc().expect("gc");
    // The preparer's reclaim after a roll may have taken some first: count
    // both (they run one at a time, so both are done when gc returns).
    assert!(log.stats().files_removed > 0, "{report:?}");
    assert!(report.entries_rewritten >= 4, "{report:?}");
    assert!(log.stats().files < files_before);
    assert_eq!(retired_in(dir.path()), 0, "gc erases what it retires");
    check(&log, 1, Some((1, 4)), 1000);
    check(&log, 7, Some((58, 60)), 1500);
    drop(log);
    let log = RaftLog::open(dir.path(), opts(4096)).expect("reopen");
    check(&log, 1, Some((1, 4)), 1000);
    check(&log, 7, Some((58, 60)), 1500);
    assert_eq!(log.vote(7), Some(b"v7".to_vec()));
    assert_eq!(log.purged(7), Some((57, b"p7b".to_vec())));
}

fn retired_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("list")
        .filter(|e| chronos_wal::retire::is_retired(&e.as_ref().expect("entry").path()))
        .count()
}

/// A crash between gc's rename and its erase leaves a retired file, possibly
/// cut short. Were it read as part of the log, its torn tail would cut every
/// later file; open erases it instead.
#[test]
fn a_retired_file_left_by_a_crash_is_erased_at_open_and_cuts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = RaftLog::open(dir.path(), opts(4096)).expect("open");
    for i in 1..=12 {
        append(&log, 2, i, i, 1500);
    }
    let (active, _) = written(&log);
    assert!(active > 3, "{active} files");
    drop(log);
    let oldest = crate::files::file_path(dir.path(), 1);
    let data = std::fs::read(&oldest).expect("read the oldest file");
    std::fs::remove_file(&oldest).expect("remove");
    let mut retired = oldest.into_os_string();
    retired.push(chronos_wal::retire::RETIRED_SUFFIX);
    std::fs::write(&retired, &data[..data.len() / 2]).expect("write a half-erased copy");
    let log = RaftLog::open(dir.path(), opts(4096)).expect("reopen");
    assert_eq!(retired_in(dir.path()), 0, "the leftover is erased");
    let (first, last) = log.range(2).expect("entries");
    assert_eq!(last, 12, "nothing after the retired file was cut");
    assert!(first > 1, "the retired file's entries are not read back");
}

#[test]
fn gc_without_rewrite_keeps_pinned_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts(4096);
    o.max_files_before_rewrite = 1000;
    let log = RaftLog::open(dir.path(), o).expect("open");
    append(&log, 1, 1, 1, 3000);
    for i in 1..=10 {
        append(&log, 2, i, i, 3000);
    }
    log.gc().expect("gc");
    assert_eq!(
        log.stats().files_removed,
        0,
        "partition 1 pins the oldest file"
    );
    log.purge(1, 1, b"").expect("purge");
    log.purge(2, 8, b"").expect("purge");
    let report = log.gc().expect("gc");
    // Counted over gc and the preparer's reclaim, which may come first.
    assert!(log.stats().files_removed >= 5, "{report:?}");
    assert_eq!(report.entries_rewritten, 0);
    check(&log, 2, Some((9, 10)), 3000);
}

/// The active file and how far records are written in it (zeros may follow).
fn written(log: &RaftLog) -> (u64, u64) {
    let inner = log.shared.inner.lock();
    (inner.active, inner.files[&inner.active].len)
}

#[test]
fn appends_land_in_space_zero_filled_ahead_and_reopen_seals_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = RaftLog::open(dir.path(), opts(64 << 20)).expect("open");
    append(&log, 1, 1, 3, 100);
    let (seq, _) = written(&log);
    let path = crate::files::file_path(dir.path(), seq);
    let deadline = std::time::Instant::now() + DEADLINE;
    let ahead = |len: u64| len + crate::prealloc::AHEAD_BYTES;
    while std::fs::metadata(&path).expect("stat").len() < ahead(written(&log).1) {
        assert!(
            std::time::Instant::now() < deadline,
            "no zeros written ahead"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Records now overwrite zeros; more follow without a roll.
    append(&log, 1, 4, 50, 3000);
    assert_eq!(written(&log).0, seq, "rolled");
    let (_, len) = written(&log);
    assert!(std::fs::metadata(&path).expect("stat").len() > len);
    drop(log);
    let log = RaftLog::open(dir.path(), opts(64 << 20)).expect("reopen");
    assert_eq!(log.range(1), Some((1, 50)));
    let first = log.read(1, 1, 4).expect("read");
    assert!(first.iter().all(|(i, b)| *b == payload(1, *i, 100)));
    let rest = log.read(1, 4, 51).expect("read");
    assert_eq!(rest.len(), 47);
    assert!(rest.iter().all(|(i, b)| *b == payload(1, *i, 3000)));
    // The file keeps its blocks (a spare later reuses them); the roll at
    // open sealed it right after its records.
    assert!(std::fs::metadata(&path).expect("stat").len() > len);
    let seal = crate::codec::RECORD_OVERHEAD_BYTES as u64;
    assert_eq!(log.shared.inner.lock().files[&seq].len, len + seal);
    drop(log);
    let log = RaftLog::open(dir.path(), opts(64 << 20)).expect("reopen again");
    assert_eq!(log.range(1), Some((1, 50)));
    assert_eq!(log.shared.inner.lock().files[&seq].len, len + seal);
}

#[test]
fn records_after_a_zeroed_length_are_never_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = RaftLog::open(dir.path(), opts(1 << 20)).expect("open");
    append(&log, 1, 1, 5, 200);
    append(&log, 1, 6, 8, 200);
    let (seq, len) = written(&log);
    drop(log);
    // A crash that kept entries 7 and 8 but lost the page holding 6's length.
    let record = 200 + crate::codec::RECORD_OVERHEAD_BYTES as u64;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(crate::files::file_path(dir.path(), seq))
        .expect("open file");
    std::os::unix::fs::FileExt::write_all_at(&file, &[0; 4], len - 3 * record).expect("zero");
    drop(file);
    let log = RaftLog::open(dir.path(), opts(1 << 20)).expect("reopen");
    check(&log, 1, Some((1, 5)), 200);
    append(&log, 1, 6, 6, 200);
    drop(log);
    let log = RaftLog::open(dir.path(), opts(1 << 20)).expect("reopen again");
    check(&log, 1, Some((1, 6)), 200);
}

#[test]
fn torn_tail_keeps_the_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = RaftLog::open(dir.path(), opts(1 << 20)).expect("open");
    append(&log, 1, 1, 5, 200);
    log.save_vote(1, b"v").expect("vote");
    let synced = log.durable_position();
    append(&log, 1, 6, 8, 200);
    let (seq, len) = written(&log);
    let at = log.close_without_sync();
    assert!(at >= synced && at.file_seq == seq);
    let path = crate::files::file_path(dir.path(), at.file_seq);
    // Cut in the middle of entry 7's record.
    let record = 200 + crate::codec::RECORD_OVERHEAD_BYTES as u64;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open file");
    file.set_len(len - record - record / 2).expect("cut");
    drop(file);
    let log = RaftLog::open(dir.path(), opts(1 << 20)).expect("reopen");
    check(&log, 1, Some((1, 6)), 200);
    assert_eq!(log.vote(1), Some(b"v".to_vec()));
    append(&log, 1, 7, 7, 200);
    check(&log, 1, Some((1, 7)), 200);
}

#[test]
fn file_without_header_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = RaftLog::open(dir.path(), opts(1 << 20)).expect("open");
        append(&log, 4, 1, 3, 10);
        log.sync().expect("sync");
    }
    let last = crate::files::list(dir.path())
        .expect("list")
        .last()
        .map(|(s, _)| *s)
        .unwrap_or(0);
    // A crash while creating the next file leaves it without a header.
    std::fs::write(crate::files::file_path(dir.path(), last + 1), b"CR").expect("write");
    let log = RaftLog::open(dir.path(), opts(1 << 20)).expect("reopen");
    check(&log, 4, Some((1, 3)), 10);
    let seqs: Vec<u64> = crate::files::list(dir.path())
        .expect("list")
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert!(!seqs.contains(&(last + 1)), "{seqs:?}");
}

#[test]
fn batch_and_periodic_modes_run_callbacks() {
    for fsync in [
        FsyncMode::Batch {
            max_delay: Duration::from_millis(2),
        },
        FsyncMode::Periodic {
            interval: Duration::from_millis(2),
        },
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = RaftLog::open(
            dir.path(),
            RaftLogOptions {
                fsync,
                ..opts(1 << 20)
            },
        )
        .expect("open");
        append(&log, 1, 1, 3, 10);
        log.save_vote(1, b"v").expect("vote");
        let fsyncs = log.stats().fsyncs;
        assert!(fsyncs >= 1);
        check(&log, 1, Some((1, 3)), 10);
    }
}

#[test]
fn dropping_fails_pending_callbacks_or_runs_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = RaftLog::open(
        dir.path(),
        RaftLogOptions {
            fsync: FsyncMode::Batch {
                max_delay: Duration::from_secs(60),
            },
            ..opts(1 << 20)
        },
    )
    .expect("open");
    let (tx, rx) = mpsc::channel();
    log.append(1, &[(1, &b"x"[..])], Box::new(move |r| drop(tx.send(r))))
        .expect("append");
    drop(log);
    let r = rx.recv_timeout(DEADLINE).expect("callback ran");
    assert!(matches!(r, Err(RaftLogError::Closed)), "{r:?}");
}
