//! Recovery: a damaged tail (cut at any byte, or any byte flipped) reopens
//! to exactly the records before the damage, and the log goes on from there.
//! Also: damaged sealed segments and `.idx` files.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use chronos_wal::{Wal, WalError};
use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Cut the last segment to this fraction (per mille) of its length.
    Cut(u64),
    /// Flip one bit at this fraction (per mille) of the record area.
    Flip(u64, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0u64..=1000).prop_map(Damage::Cut),
        ((0u64..1000), (0u8..8)).prop_map(|(at, bit)| Damage::Flip(at, bit)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn damaged_tail_recovers_to_the_valid_prefix(
        shapes in batches(small_shape(), 16),
        more in batches(small_shape(), 4),
        segment_bytes in prop_oneof![Just(4096u64), Just(1 << 20)],
        damage in damage(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = quiet_opts(segment_bytes, 512);
        let model = flatten(&materialize(&shapes, None, 1));
        {
            let wal = Wal::open(dir.path(), opts).expect("open");
            for batch in materialize(&shapes, None, 1) {
                append_batch(&wal, &batch).expect("append");
            }
        }
        let files = segment_files(dir.path());
        let (last_first, last_path) = files.last().cloned().expect("a segment");
        let file_len = fs::metadata(&last_path).expect("stat").len();
        // Record boundaries inside the last segment.
        let mut ends = Vec::new();
        let mut pos = 8;
        for rec in model.iter().filter(|r| r.0.index >= last_first) {
            pos += rec_len(rec);
            ends.push(pos);
        }
        prop_assert_eq!(pos, file_len);

        let (damage_at, segment_kept) = match damage {
            Damage::Cut(per_mille) => {
                let new_len = file_len * per_mille / 1000;
                OpenOptions::new().write(true).open(&last_path).expect("open").set_len(new_len).expect("cut");
                (new_len, new_len >= 8)
            }
            Damage::Flip(per_mille, bit) => {
                let at = 8 + (file_len - 8) * per_mille / 1000;
                if at < file_len {
                    flip_bit(&last_path, at, bit);
                }
                (at, true)
            }
        };
        let earlier = model.iter().filter(|r| r.0.index < last_first).count();
        let survivors_in_last = ends.iter().filter(|&&end| end <= damage_at).count();
        let kept = if segment_kept { earlier + survivors_in_last } else { earlier };
        let expected: Vec<Rec> = model[..kept].to_vec();

        let wal = Wal::open(dir.path(), opts).expect("reopen after damage");
        prop_assert_eq!(read_all(&wal), expected.clone());
        let valid_end = if survivors_in_last == 0 { 8 } else { ends[survivors_in_last - 1] };
        let len_now = fs::metadata(&last_path).map(|m| m.len()).unwrap_or(0);
        match damage {
            Damage::Cut(_) if !segment_kept => {
                prop_assert_eq!(wal.recovery_report().dropped_segments.len(), 1);
                prop_assert_eq!(len_now, 0, "garbage segment removed");
            }
            Damage::Cut(_) => {
                prop_assert_eq!(wal.recovery_report().dropped_bytes, damage_at - valid_end);
                prop_assert_eq!(len_now, valid_end);
            }
            Damage::Flip(..) => {
                let torn = if damage_at < file_len { file_len - valid_end } else { 0 };
                prop_assert_eq!(wal.recovery_report().dropped_bytes, torn);
            }
        }

        // The log continues right after the surviving prefix.
        let next = materialize(&more, expected.last().map(|r| &r.0), 1);
        for batch in &next {
            append_batch(&wal, batch).expect("append after recovery");
        }
        drop(wal);
        let wal = Wal::open(dir.path(), opts).expect("reopen again");
        prop_assert_eq!(wal.recovery_report().dropped_bytes, 0);
        let mut all = expected;
        all.extend(flatten(&next));
        prop_assert_eq!(read_all(&wal), all);
    }
}

fn flip_bit(path: &std::path::Path, at: u64, bit: u8) {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(at)).expect("seek");
    file.read_exact(&mut byte).expect("read");
    byte[0] ^= 1 << bit;
    file.seek(SeekFrom::Start(at)).expect("seek");
    file.write_all(&byte).expect("write");
}

/// A log of ~20 records of 400 B in 1 KiB segments (many segments).
fn many_segments(dir: &std::path::Path) -> Vec<Rec> {
    let shapes = vec![
        vec![
            Shape {
                len: 400,
                seq_step: 1,
                ts_step: 10
            };
            4
        ];
        5
    ];
    let batches = materialize(&shapes, None, 1);
    let wal = Wal::open(dir, quiet_opts(1024, 256)).expect("open");
    for batch in &batches {
        append_batch(&wal, batch).expect("append");
    }
    flatten(&batches)
}

#[test]
fn garbage_sealed_segment_is_dropped_with_everything_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = many_segments(dir.path());
    let files = segment_files(dir.path());
    assert!(files.len() >= 5, "{files:?}");
    // Wipe the third segment's contents, as if it had never been written.
    let (victim_first, victim) = files[2].clone();
    fs::write(&victim, b"").expect("wipe");
    let wal = Wal::open(dir.path(), quiet_opts(1024, 256)).expect("open");
    let kept: Vec<Rec> = model
        .iter()
        .filter(|r| r.0.index < victim_first)
        .cloned()
        .collect();
    assert_eq!(read_all(&wal), kept);
    assert_eq!(
        wal.recovery_report().dropped_segments.len(),
        files.len() - 2
    );
    assert_eq!(segment_files(dir.path()).len(), 2);
    // The now-last segment lost its .idx (it is active again) and takes appends.
    assert_eq!(idx_files(dir.path()), vec![files[0].0]);
    let next = materialize(
        &[vec![Shape {
            len: 10,
            seq_step: 1,
            ts_step: 1,
        }]],
        kept.last().map(|r| &r.0),
        1,
    );
    append_batch(&wal, &next[0]).expect("append");
}

#[test]
fn stale_or_corrupt_idx_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = many_segments(dir.path());
    let idx = idx_files(dir.path());
    assert!(idx.len() >= 3);
    let idx_path = |first: u64| dir.path().join(format!("{first:020}.idx"));
    fs::remove_file(idx_path(idx[0])).expect("remove idx");
    let mut bytes = fs::read(idx_path(idx[1])).expect("read idx");
    bytes[20] ^= 0xFF;
    fs::write(idx_path(idx[1]), bytes).expect("corrupt idx");
    let wal = Wal::open(dir.path(), quiet_opts(1024, 256)).expect("open");
    assert_eq!(wal.recovery_report().rebuilt_indexes, 2);
    assert_eq!(wal.recovery_report().dropped_bytes, 0);
    assert_eq!(read_all(&wal), model);
    assert_eq!(
        idx_files(dir.path()),
        idx,
        "rebuilt .idx files are written back"
    );
}

#[test]
fn unknown_segment_version_is_an_error_not_data_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    many_segments(dir.path());
    let (_, last) = segment_files(dir.path()).pop().expect("segment");
    let mut file = OpenOptions::new().write(true).open(&last).expect("open");
    file.seek(SeekFrom::Start(6)).expect("seek");
    file.write_all(&9u16.to_le_bytes()).expect("write");
    drop(file);
    let err = Wal::open(dir.path(), quiet_opts(1024, 256)).expect_err("must refuse");
    assert!(
        matches!(err, WalError::UnsupportedVersion { version: 9, .. }),
        "{err:?}"
    );
    assert!(last.exists());
}

#[test]
fn empty_directory_and_stray_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("README"), b"not ours").expect("write");
    fs::write(dir.path().join("00000000000000000007.idx"), b"orphan").expect("write");
    let wal = Wal::open(dir.path().join("sub"), quiet_opts(1024, 256)).expect("open creates dir");
    assert_eq!(wal.first_index(), None);
    assert_eq!(wal.last_header(), None);
    drop(wal);
    let wal = Wal::open(dir.path(), quiet_opts(1024, 256)).expect("open");
    assert_eq!(wal.first_index(), None);
    assert!(
        !dir.path().join("00000000000000000007.idx").exists(),
        "orphan .idx removed"
    );
    assert!(
        dir.path().join("README").exists(),
        "unknown files are left alone"
    );
}
