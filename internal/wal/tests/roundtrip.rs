//! Property: whatever is appended comes back, byte for byte and in order,
//! after a close and reopen, across many segment rolls.

mod common;

use chronos_wal::Wal;
use common::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn appended_records_round_trip_through_reopen(
        shapes in batches(shape(), 24),
        first_index in 1u64..1_000,
        segment_bytes in prop_oneof![Just(4096u64), Just(8192), Just(1 << 20)],
        index_interval_bytes in prop_oneof![Just(256u64), Just(1024), Just(64 * 1024)],
        probe in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = quiet_opts(segment_bytes, index_interval_bytes);
        let batches = materialize(&shapes, None, first_index);
        let model = flatten(&batches);
        {
            let wal = Wal::open(dir.path(), opts).expect("open");
            for batch in &batches {
                append_batch(&wal, batch).expect("append");
            }
            prop_assert_eq!(read_all(&wal), model.clone(), "before reopen");
            wal.close().expect("close");
        }
        let wal = Wal::open(dir.path(), opts).expect("reopen");
        let report = wal.recovery_report();
        prop_assert_eq!(report.dropped_bytes, 0);
        prop_assert_eq!(report.rebuilt_indexes, 0, "sealed .idx files are reused");
        prop_assert_eq!(wal.first_index(), Some(first_index));
        prop_assert_eq!(wal.last_header(), model.last().map(|r| r.0));
        prop_assert_eq!(wal.durable_index(), model.last().map(|r| r.0.index));
        prop_assert_eq!(read_all(&wal), model.clone());

        // Starting in the middle yields exactly the suffix.
        let start = probe.index(model.len());
        let from = collect(wal.iter_from_index(model[start].0.index).expect("iter"));
        prop_assert_eq!(&from[..], &model[start..]);

        // Segments: every file but the last is sealed with an .idx, none is
        // over the limit unless it holds a single record, and stats agree.
        let files = segment_files(dir.path());
        prop_assert_eq!(wal.stats().segment_count, files.len() as u64);
        let total: u64 = files.iter().map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
        prop_assert_eq!(wal.stats().disk_bytes, total);
        let sealed: Vec<u64> = files[..files.len() - 1].iter().map(|(f, _)| *f).collect();
        prop_assert_eq!(idx_files(dir.path()), sealed);
        for (i, (first, path)) in files.iter().enumerate() {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            let next_first = files.get(i + 1).map_or(u64::MAX, |f| f.0);
            let held = model.iter().filter(|r| r.0.index >= *first && r.0.index < next_first).count();
            prop_assert!(len <= segment_bytes || held == 1, "segment {first} has {len} bytes, {held} records");
        }
        let data_bytes: u64 = model.iter().map(rec_len).sum();
        if data_bytes + 8 > segment_bytes {
            prop_assert!(files.len() > 1, "log larger than a segment must roll");
        }
    }
}
