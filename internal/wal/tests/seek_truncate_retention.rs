//! Seeks (by index, seq, time), truncation and retention, checked against a
//! reference `Vec` of everything appended.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chronos_wal::{Retention, Wal, WalError};
use common::*;
use proptest::prelude::*;

/// Position in `model` where an iterator's output starts, asserting that the
/// output is exactly the suffix of `model` from there.
fn suffix_start(model: &[Rec], got: &[Rec]) -> usize {
    let start = model.len() - got.len();
    assert_eq!(
        got,
        &model[start..],
        "iterator output must be a suffix of the log"
    );
    start
}

/// A query: which record to aim at, and an offset of -1, 0 or +1 from its
/// index / seq / timestamp, so boundaries are hit exactly.
type Query = (prop::sample::Index, i8);

fn query() -> impl Strategy<Value = Query> {
    (any::<prop::sample::Index>(), -1i8..=1)
}

fn near(value: u64, offset: i8) -> u64 {
    value.saturating_add_signed(i64::from(offset))
}

fn check_seeks(wal: &Wal, model: &[Rec], queries: &[Query], multi_segment: bool) {
    let first = model[0].0.index;
    for (pick, offset) in queries {
        let aim = &model[pick.index(model.len())].0;
        // By index: exactly from the record asked for (or empty past the end).
        let index = near(aim.index, *offset).max(first);
        let got = collect(wal.iter_from_index(index).expect("iter_from_index"));
        let expect_from = ((index - first) as usize).min(model.len());
        assert_eq!(
            got,
            model[expect_from..].to_vec(),
            "iter_from_index({index})"
        );

        // By seq: starts at a record with seq <= asked (or at the start), so
        // no record holding that seq is skipped.
        let seq = near(aim.seq, *offset);
        let got = collect(wal.iter_from_seq(seq).expect("iter_from_seq"));
        let start = suffix_start(model, &got);
        assert!(
            start < model.len(),
            "iter_from_seq({seq}) must not be empty"
        );
        assert!(
            start == 0 || model[start].0.seq <= seq,
            "iter_from_seq({seq}) started too late at {start}"
        );

        // By time: every record before the start is older than asked.
        let ts = near(aim.ts_ms, *offset);
        let got = collect(wal.iter_from_ts(ts).expect("iter_from_ts"));
        let start = suffix_start(model, &got);
        assert!(start < model.len(), "iter_from_ts({ts}) must not be empty");
        let before_max = model[..start].iter().map(|r| r.0.ts_ms).max();
        assert!(
            before_max.is_none_or(|m| m < ts),
            "iter_from_ts({ts}) skipped a record with ts {before_max:?}"
        );
    }
    if multi_segment {
        // Seeks use the index: the newest seq/time never start at the beginning.
        let max_seq = model.last().map_or(0, |r| r.0.seq);
        let got = collect(wal.iter_from_seq(max_seq).expect("iter"));
        assert!(
            suffix_start(model, &got) > 0,
            "seq seek scanned the whole log"
        );
        let got = collect(wal.iter_from_ts(u64::MAX).expect("iter"));
        assert!(
            suffix_start(model, &got) > 0,
            "time seek scanned the whole log"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn seeks_start_where_they_must(
        shapes in batches(small_shape(), 30),
        index_interval_bytes in prop_oneof![Just(128u64), Just(1024)],
        queries in prop::collection::vec(query(), 16),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = quiet_opts(4096, index_interval_bytes);
        let batches = materialize(&shapes, None, 7);
        let model = flatten(&batches);
        let wal = Wal::open(dir.path(), opts).expect("open");
        for batch in &batches {
            append_batch(&wal, batch).expect("append");
        }
        let multi = segment_files(dir.path()).len() > 1;
        check_seeks(&wal, &model, &queries, multi);
        drop(wal);
        // Same answers from indexes loaded from .idx / rebuilt by scanning.
        let wal = Wal::open(dir.path(), opts).expect("reopen");
        check_seeks(&wal, &model, &queries, multi);
    }

    #[test]
    fn truncate_from_then_append(
        shapes in batches(small_shape(), 24),
        more in batches(small_shape(), 8),
        cut in any::<prop::sample::Index>(),
        queries in prop::collection::vec(query(), 8),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = quiet_opts(4096, 256);
        let mut model = flatten(&materialize(&shapes, None, 1));
        let wal = Wal::open(dir.path(), opts).expect("open");
        for batch in materialize(&shapes, None, 1) {
            append_batch(&wal, &batch).expect("append");
        }
        // Any index from the first to one past the last.
        let keep = cut.index(model.len() + 1);
        let cut_index = keep as u64 + 1;
        let cuts_something = keep < model.len();
        wal.truncate_from(cut_index).expect("truncate");
        model.truncate(keep);
        prop_assert_eq!(read_all(&wal), model.clone());
        prop_assert_eq!(wal.last_header(), model.last().map(|r| r.0));
        if cuts_something {
            // A real truncation fsyncs: what is left is durable.
            prop_assert_eq!(wal.durable_index(), model.last().map(|r| r.0.index));
        }
        let segments = segment_files(dir.path());
        prop_assert!(segments.iter().all(|(first, _)| *first <= cut_index), "later segments deleted");
        prop_assert_eq!(wal.stats().segment_count, segments.len() as u64);

        // Appends continue at the cut index, and survive a reopen.
        let next = materialize(&more, model.last().map(|r| &r.0), cut_index);
        prop_assert_eq!(next[0][0].0.index, cut_index);
        for batch in &next {
            append_batch(&wal, batch).expect("append after truncate");
        }
        model.extend(flatten(&next));
        prop_assert_eq!(read_all(&wal), model.clone());
        check_seeks(&wal, &model, &queries, false);
        drop(wal);
        let wal = Wal::open(dir.path(), opts).expect("reopen");
        prop_assert_eq!(wal.recovery_report().dropped_bytes, 0);
        prop_assert_eq!(read_all(&wal), model.clone());
        check_seeks(&wal, &model, &queries, false);
    }

    #[test]
    fn retention_removes_exactly_the_qualifying_prefix(
        records in 20usize..80,
        age_minutes in prop::option::of(0u64..90),
        max_kib in prop::option::of(0u64..40),
        upto in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = quiet_opts(4096, 512);
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64;
        // One record per minute, oldest first: ages are far from the thresholds.
        let model: Vec<Rec> = (0..records as u64)
            .map(|i| {
                let header = chronos_wal::RecordHeader {
                    term: 1,
                    index: i + 1,
                    seq: i,
                    ts_ms: now_ms - (records as u64 - i) * 60_000,
                };
                (header, payload(i + 1, 700))
            })
            .collect();
        let wal = Wal::open(dir.path(), opts).expect("open");
        for rec in &model {
            append_batch(&wal, std::slice::from_ref(rec)).expect("append");
        }
        let policy = Retention {
            max_age: age_minutes.map(|m| Duration::from_millis(m * 60_000 + 30_000)),
            max_bytes: max_kib.map(|k| k * 1024),
        };
        let upto_index = upto.index(records + 2) as u64;

        // Reference: walk the sealed segments oldest first.
        let files = segment_files(dir.path());
        let sizes: Vec<u64> = files.iter().map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).collect();
        let mut total: u64 = sizes.iter().sum();
        let mut expect_removed = 0;
        for k in 0..files.len() - 1 {
            let last_index = files[k + 1].0 - 1;
            let newest_ts = model[last_index as usize - 1].0.ts_ms;
            let too_old = policy.max_age.is_some_and(|a| u128::from(now_ms - newest_ts) > a.as_millis());
            let too_big = policy.max_bytes.is_some_and(|m| total > m);
            if last_index > upto_index || !(too_old || too_big) {
                break;
            }
            total -= sizes[k];
            expect_removed += 1;
        }

        let removed = wal.remove_segments(&policy, upto_index).expect("retention");
        prop_assert_eq!(removed.segments, expect_removed as u64);
        prop_assert_eq!(removed.bytes, sizes[..expect_removed].iter().sum::<u64>());
        let remaining = segment_files(dir.path());
        prop_assert_eq!(&remaining[..], &files[expect_removed..]);
        prop_assert!(idx_files(dir.path()).iter().all(|f| *f >= files[expect_removed].0), ".idx removed too");
        let left = std::fs::read_dir(dir.path()).expect("read dir")
            .filter(|e| chronos_wal::retire::is_retired(&e.as_ref().expect("entry").path()))
            .count();
        prop_assert_eq!(left, 0, "retired segments are erased");
        let first = files[expect_removed].0;
        prop_assert_eq!(wal.first_index(), Some(first));
        prop_assert_eq!(read_all(&wal), model[first as usize - 1..].to_vec());
        prop_assert_eq!(wal.stats().disk_bytes, total);
        if expect_removed > 0 {
            let below = wal.iter_from_index(1).map(|_| ()).expect_err("removed range");
            let is_below = matches!(below, WalError::BelowFirstIndex { requested: 1, .. });
            prop_assert!(is_below, "unexpected error {:?}", below);
        }
        drop(wal);
        let wal = Wal::open(dir.path(), opts).expect("reopen");
        prop_assert_eq!(read_all(&wal), model[first as usize - 1..].to_vec());
    }
}

#[test]
fn retention_never_removes_the_active_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), quiet_opts(1024, 256)).expect("open");
    for batch in materialize(
        &[vec![
            Shape {
                len: 300,
                seq_step: 1,
                ts_step: 0
            };
            10
        ]],
        None,
        1,
    ) {
        append_batch(&wal, &batch).expect("append");
    }
    let everything = Retention {
        max_age: Some(Duration::ZERO),
        max_bytes: Some(0),
    };
    let removed = wal
        .remove_segments(&everything, u64::MAX)
        .expect("retention");
    assert!(removed.segments > 0);
    let left = segment_files(dir.path());
    assert_eq!(left.len(), 1);
    assert_eq!(wal.first_index(), Some(left[0].0));
    assert_eq!(wal.last_header().map(|h| h.index), Some(10));
}

#[test]
fn truncating_everything_leaves_an_empty_log_that_accepts_any_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = quiet_opts(1024, 256);
    let wal = Wal::open(dir.path(), opts).expect("open");
    for batch in materialize(
        &[vec![
            Shape {
                len: 300,
                seq_step: 1,
                ts_step: 5
            };
            10
        ]],
        None,
        5,
    ) {
        append_batch(&wal, &batch).expect("append");
    }
    wal.truncate_from(1).expect("truncate below first");
    assert_eq!(wal.first_index(), None);
    assert_eq!(wal.last_header(), None);
    assert_eq!(wal.durable_index(), None);
    assert_eq!(collect(wal.iter_from_index(5).expect("iter")), Vec::new());
    let next = materialize(
        &[vec![
            Shape {
                len: 10,
                seq_step: 1,
                ts_step: 5
            };
            3
        ]],
        None,
        100,
    );
    append_batch(&wal, &next[0]).expect("append at a new index");
    drop(wal);
    let wal = Wal::open(dir.path(), opts).expect("reopen");
    assert_eq!(read_all(&wal), next[0]);
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn appends_that_break_the_rules_are_rejected_without_effect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), quiet_opts(4096, 256)).expect("open");
    let batch = materialize(
        &[vec![
            Shape {
                len: 10,
                seq_step: 2,
                ts_step: 1
            };
            3
        ]],
        None,
        1,
    );
    append_batch(&wal, &batch[0]).expect("append");
    let mut gap = batch[0][2].clone();
    gap.0.index = 5;
    assert!(matches!(
        append_batch(&wal, &[gap]),
        Err(WalError::NonContiguous {
            expected: 4,
            got: 5
        })
    ));
    let mut back = batch[0][2].clone();
    back.0.index = 4;
    back.0.seq = 0;
    assert!(matches!(
        append_batch(&wal, &[back]),
        Err(WalError::SeqRegression { .. })
    ));
    let huge = vec![0u8; chronos_wal::MAX_RECORD_BYTES as usize + 1];
    let mut big = batch[0][2].clone();
    big.0.index = 4;
    let err = wal
        .append(&[(big.0, &huge[..])], noop())
        .expect_err("too large");
    assert!(matches!(err, WalError::RecordTooLarge { .. }));
    let empty = tempfile::tempdir().expect("tempdir");
    let fresh = Wal::open(empty.path(), quiet_opts(4096, 256)).expect("open");
    let mut max = batch[0][0].clone();
    max.0.index = u64::MAX;
    assert!(matches!(
        append_batch(&fresh, &[max]),
        Err(WalError::InvalidIndex { index: u64::MAX })
    ));
    // openraft's first entry has index 0: an empty log accepts it.
    let mut zero = batch[0][0].clone();
    zero.0.index = 0;
    append_batch(&fresh, &[zero]).expect("index 0 starts a log");
    assert_eq!(fresh.first_index(), Some(0));
    assert_eq!(read_all(&wal), batch[0]);
}
