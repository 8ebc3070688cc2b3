//! Reusing dead files: spares written again, readers that hold a file, the
//! seal that ends a finished file, and logs of the format before stamps.

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::codec::{self, Format};
use crate::{FsyncMode, RaftLog, RaftLogOptions};

const DEADLINE: Duration = Duration::from_secs(10);

fn opts(spare_files: usize) -> RaftLogOptions {
    RaftLogOptions {
        file_bytes: 4096,
        fsync: FsyncMode::Always,
        max_files_before_rewrite: 1000,
        spare_files,
    }
}

fn body(p: u32, i: u64, len: usize) -> Vec<u8> {
    let mut v = format!("p{p}-e{i}-").into_bytes();
    v.resize(len, b'x');
    v
}

fn append(log: &RaftLog, p: u32, i: u64, len: usize) {
    let b = body(p, i, len);
    let (tx, rx) = mpsc::channel();
    log.append(p, &[(i, &b[..])], Box::new(move |r| drop(tx.send(r))))
        .expect("append");
    rx.recv_timeout(DEADLINE)
        .expect("callback")
        .expect("durable");
}

fn check(log: &RaftLog, p: u32, first: u64, last: u64, len: usize) {
    assert_eq!(log.range(p), Some((first, last)), "partition {p}");
    for (i, b) in log.read(p, first, last + 1).expect("read") {
        assert_eq!(b, body(p, i, len), "partition {p} entry {i}");
    }
}

fn count(dir: &Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .expect("list")
        .filter(|e| {
            e.as_ref()
                .expect("entry")
                .path()
                .extension()
                .is_some_and(|x| x == ext)
        })
        .count()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn dead_files_are_written_again_instead_of_new_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = RaftLog::open(dir.path(), opts(2)).expect("open");
    log.save_vote(7, b"v7").expect("vote");
    let mut most_files = 0;
    for i in 1..=120 {
        append(&log, 7, i, 1500);
        if i > 2 {
            log.compact(7, i - 2).expect("compact");
        }
        most_files = most_files.max(count(dir.path(), "rlog") + count(dir.path(), "spare"));
    }
    wait_for("files reused", || log.stats().files_reused >= 20);
    // About 60 files were written; only a handful ever existed at once.
    assert!(most_files <= 8, "{most_files} files at once");
    assert!(log.stats().files_removed <= 5, "{:?}", log.stats());
    check(&log, 7, 119, 120, 1500);
    drop(log);
    let spares = count(dir.path(), "spare");
    assert!((1..=2).contains(&spares), "{spares} spares");
    let log = RaftLog::open(dir.path(), opts(2)).expect("reopen");
    // Adopted, and the roll at open took one.
    assert_eq!(log.stats().files_reused, 1);
    assert_eq!(log.stats().spare_files, spares as u64 - 1);
    check(&log, 7, 119, 120, 1500);
    assert_eq!(log.vote(7), Some(b"v7".to_vec()));
    // The next file is a spare, and what it held before never reads back.
    let reused = log.stats().files_reused;
    for i in 121..=130 {
        append(&log, 7, i, 1500);
    }
    assert!(log.stats().files_reused > reused);
    check(&log, 7, 119, 130, 1500);
    drop(log);
    let log = RaftLog::open(dir.path(), opts(2)).expect("reopen again");
    check(&log, 7, 119, 130, 1500);
}

#[test]
fn a_dead_file_being_read_is_not_written_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = RaftLog::open(dir.path(), opts(1)).expect("open");
    append(&log, 1, 1, 3000);
    let held = Arc::clone(&log.shared.inner.lock().files[&1].file);
    append(&log, 1, 2, 3000); // rolls to file 2
    log.compact(1, 1).expect("compact");
    log.gc().expect("gc");
    wait_for("file 1 kept as a spare", || {
        log.shared.inner.lock().spares.len() == 1
    });
    append(&log, 1, 3, 3000); // rolls to file 3, which must not be file 1
    let active = Arc::clone(&log.shared.inner.lock().files[&3].file);
    assert!(
        !Arc::ptr_eq(&active, &held),
        "a file a reader holds was reused"
    );
    drop(held);
    append(&log, 1, 4, 3000); // rolls to file 4: now file 1 may be reused
    wait_for("a reuse", || log.stats().files_reused >= 1);
    check(&log, 1, 2, 4, 3000);
}

#[test]
fn a_finished_file_that_lost_its_seal_cuts_the_log_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = RaftLog::open(dir.path(), opts(0)).expect("open");
    for i in 1..=6 {
        append(&log, 3, i, 1500);
    }
    let (first_len, last_in_first) = {
        let inner = log.shared.inner.lock();
        let len = inner.files[&1].len;
        let last = (1..=6)
            .filter(|&i| inner.parts[&3].loc(i).is_some_and(|l| l.file_seq == 1))
            .max()
            .expect("entries in file 1");
        (len, last)
    };
    assert!(log.stats().files >= 3);
    drop(log);
    // A crash that kept later files' pages but not the seal's.
    let seal = codec::RECORD_OVERHEAD_BYTES as u64;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(crate::files::file_path(dir.path(), 1))
        .expect("open file 1");
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; seal as usize], first_len - seal)
        .expect("lose the seal");
    let log = RaftLog::open(dir.path(), opts(0)).expect("reopen");
    check(&log, 3, 1, last_in_first, 1500);
}

#[test]
fn a_log_of_the_format_before_stamps_opens_and_its_files_are_not_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    for e in std::fs::read_dir(&fixtures).expect("fixtures") {
        let p = e.expect("entry").path();
        std::fs::copy(&p, dir.path().join(p.file_name().expect("name"))).expect("copy");
    }
    // Written by the previous build: p1 entries 1..=18 of 300 bytes and vote
    // "vote-1"; p2 entries 4..=10 of 500 bytes, vote "vote-2", purged at 3.
    let log = RaftLog::open(dir.path(), opts(4)).expect("open");
    check(&log, 1, 1, 18, 300);
    check(&log, 2, 4, 10, 500);
    assert_eq!(log.vote(1), Some(b"vote-1".to_vec()));
    assert_eq!(log.vote(2), Some(b"vote-2".to_vec()));
    assert_eq!(log.purged(2), Some((3, b"meta2".to_vec())));
    for i in 19..=30 {
        append(&log, 1, i, 300);
    }
    drop(log);
    let log = RaftLog::open(dir.path(), opts(4)).expect("reopen");
    check(&log, 1, 1, 30, 300);
    check(&log, 2, 4, 10, 500);
    log.compact(1, 29).expect("compact");
    log.compact(2, 10).expect("compact");
    let report = log.gc().expect("gc");
    // Counted over gc and the preparer's reclaim, which may come first.
    assert!(
        log.stats().files_removed >= 4,
        "the old files go: {report:?}"
    );
    for e in std::fs::read_dir(dir.path()).expect("list") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "spare") {
            let data = std::fs::read(&p).expect("read spare");
            assert!(
                matches!(codec::read_header(0, &data), Some((Format::V2 { .. }, _))),
                "{} is not of the current format",
                p.display()
            );
        }
    }
    check(&log, 1, 30, 30, 300);
}
