//! `restart_at`: dropping the whole log so it continues past its end (a Raft
//! snapshot installed beyond the last index), and reopening afterwards.

mod common;

use chronos_wal::{RecordHeader, Wal, WalError};
use common::*;

fn records(first: u64, n: u64, first_seq: u64) -> Vec<Rec> {
    (first..first + n)
        .map(|index| {
            let header = RecordHeader {
                term: 3,
                index,
                seq: first_seq + (index - first) * 2,
                ts_ms: 1_000 + index,
            };
            (header, payload(index, 300))
        })
        .collect()
}

#[test]
fn restart_past_the_end_then_append_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: the old log spans several, each with an `.idx`.
    let opts = quiet_opts(4 << 10, 1 << 10);
    {
        let wal = Wal::open(dir.path(), opts).unwrap();
        for chunk in records(1, 100, 10).chunks(7) {
            append_batch(&wal, chunk).unwrap();
        }
        assert!(wal.stats().segment_count > 3);
        wal.restart_at(5_000).unwrap();
        assert_eq!(wal.first_index(), None, "empty until the next append");
        assert_eq!(wal.last_header(), None);
        assert_eq!(wal.durable_index(), None);
        assert!(collect(wal.iter_from_index(0).unwrap()).is_empty());
        // Reopening an empty restarted log is fine too.
    }
    {
        let wal = Wal::open(dir.path(), opts).unwrap();
        assert_eq!(wal.last_header(), None);
        // The seq may start lower than before the restart: the log is empty.
        let new = records(5_000, 50, 0);
        for chunk in new.chunks(5) {
            append_batch(&wal, chunk).unwrap();
        }
        wal.sync().unwrap();
    }
    let wal = Wal::open(dir.path(), opts).unwrap();
    assert!(wal.recovery_report().dropped_segments.is_empty());
    let new = records(5_000, 50, 0);
    assert_eq!(wal.first_index(), Some(5_000));
    assert_eq!(wal.last_header(), Some(new[49].0));
    assert_eq!(collect(wal.iter_from_index(5_000).unwrap()), new);
    assert_eq!(collect(wal.iter_from_index(5_020).unwrap()), new[20..]);
    assert_eq!(collect(wal.iter_from_seq(0).unwrap()), new);
    assert_eq!(collect(wal.iter_all()), new);
    // Below the restart point: the documented error, never a panic or old data.
    match wal.iter_from_index(50) {
        Err(WalError::BelowFirstIndex { requested, first }) => {
            assert_eq!((requested, first), (50, 5_000))
        }
        other => panic!("expected BelowFirstIndex, got {other:?}"),
    }
    // The old segment files are gone from disk.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n.as_str() >= "00000000000000005000"),
        "{names:?}"
    );
    // Appends must continue the new log.
    let err = append_batch(&wal, &records(10, 1, 500)).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::NonContiguous {
                expected: 5_050,
                got: 10
            }
        ),
        "{err}"
    );
}

#[test]
fn restart_of_an_empty_log_and_into_a_truncated_one() {
    let dir = tempfile::tempdir().unwrap();
    let opts = quiet_opts(4 << 10, 1 << 10);
    let wal = Wal::open(dir.path(), opts).unwrap();
    wal.restart_at(7).unwrap();
    append_batch(&wal, &records(7, 3, 0)).unwrap();
    wal.truncate_from(8).unwrap();
    wal.restart_at(100).unwrap();
    append_batch(&wal, &records(100, 2, 0)).unwrap();
    assert_eq!(wal.first_index(), Some(100));
    assert_eq!(wal.last_header().map(|h| h.index), Some(101));
    assert!(matches!(
        wal.restart_at(u64::MAX),
        Err(WalError::InvalidIndex { .. })
    ));
}
