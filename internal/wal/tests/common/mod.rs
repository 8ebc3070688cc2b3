//! Helpers shared by the integration tests: a reference model of the log,
//! record generators, and small wrappers around the WAL API.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use chronos_wal::{DurableCallback, FsyncMode, RecordHeader, Wal, WalError, WalOptions};
use proptest::prelude::*;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// A record as the tests keep it.
pub type Rec = (RecordHeader, Vec<u8>);

/// Deterministic payload, distinct per index.
pub fn payload(index: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (index.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

/// Shape of one generated record: payload length, seq step (0 = record
/// without events), and a timestamp step that may go backwards.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub len: usize,
    pub seq_step: u64,
    pub ts_step: i64,
}

pub fn shape() -> impl Strategy<Value = Shape> + Clone {
    (0usize..4096, 0u64..4, -50i64..200).prop_map(|(len, seq_step, ts_step)| Shape {
        len,
        seq_step,
        ts_step,
    })
}

pub fn small_shape() -> impl Strategy<Value = Shape> + Clone {
    (0usize..600, 0u64..4, -50i64..200).prop_map(|(len, seq_step, ts_step)| Shape {
        len,
        seq_step,
        ts_step,
    })
}

/// Batches of 1..8 records each.
pub fn batches(
    shape: impl Strategy<Value = Shape> + Clone,
    max_batches: usize,
) -> impl Strategy<Value = Vec<Vec<Shape>>> {
    prop::collection::vec(prop::collection::vec(shape, 1..8), 1..max_batches)
}

/// Turns shapes into concrete records continuing after `prev` (or at `first_index`).
pub fn materialize(
    batches: &[Vec<Shape>],
    prev: Option<&RecordHeader>,
    first_index: u64,
) -> Vec<Vec<Rec>> {
    let mut index = prev.map_or(first_index, |h| h.index + 1);
    let mut seq = prev.map_or(1000, |h| h.seq + 3);
    let mut ts = prev.map_or(1_000_000, |h| h.ts_ms) as i64;
    batches
        .iter()
        .map(|batch| {
            batch
                .iter()
                .map(|s| {
                    ts = (ts + s.ts_step).max(0);
                    let rec = (
                        RecordHeader {
                            term: 1 + index / 50,
                            index,
                            seq,
                            ts_ms: ts as u64,
                        },
                        payload(index, s.len),
                    );
                    index += 1;
                    seq += s.seq_step;
                    rec
                })
                .collect()
        })
        .collect()
}

pub fn noop() -> DurableCallback {
    Box::new(|_| {})
}

pub fn append_batch(wal: &Wal, batch: &[Rec]) -> Result<(), WalError> {
    let refs: Vec<(RecordHeader, &[u8])> = batch.iter().map(|(h, p)| (*h, p.as_slice())).collect();
    wal.append(&refs, noop())
}

/// Appends and returns a receiver for the durable callback.
pub fn append_watch(
    wal: &Wal,
    batch: &[Rec],
) -> Result<mpsc::Receiver<Result<(), WalError>>, WalError> {
    let (tx, rx) = mpsc::channel();
    let refs: Vec<(RecordHeader, &[u8])> = batch.iter().map(|(h, p)| (*h, p.as_slice())).collect();
    wal.append(
        &refs,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )?;
    Ok(rx)
}

pub fn collect(iter: chronos_wal::WalIter) -> Vec<Rec> {
    iter.map(|r| r.expect("valid record")).collect()
}

/// Every record in the log.
pub fn read_all(wal: &Wal) -> Vec<Rec> {
    match wal.first_index() {
        None => Vec::new(),
        Some(first) => collect(wal.iter_from_index(first).expect("iter")),
    }
}

/// Options that never fsync on their own (tests that don't test durability).
pub fn quiet_opts(segment_bytes: u64, index_interval_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        index_interval_bytes,
        fsync: FsyncMode::Periodic {
            interval: Duration::from_secs(3600),
        },
    }
}

/// Segment files in the directory, sorted by first index.
pub fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| {
            let path = e.expect("entry").path();
            let name = path.file_name()?.to_str()?.to_owned();
            let first = name.strip_suffix(".wal")?.parse().ok()?;
            Some((first, path))
        })
        .collect();
    out.sort();
    out
}

pub fn idx_files(dir: &Path) -> Vec<u64> {
    let mut out: Vec<u64> = fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| {
            let path = e.expect("entry").path();
            path.file_name()?
                .to_str()?
                .strip_suffix(".idx")?
                .parse()
                .ok()
        })
        .collect();
    out.sort();
    out
}

/// On-disk size of a record.
pub fn rec_len(rec: &Rec) -> u64 {
    40 + rec.1.len() as u64
}

pub fn flatten(batches: &[Vec<Rec>]) -> Vec<Rec> {
    batches.iter().flatten().cloned().collect()
}
