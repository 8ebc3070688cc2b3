//! Open-time replay. Files are read in sequence order and their records
//! applied to a tolerant per-partition index. The first torn or corrupt
//! record cuts the log: its file is truncated at the last good record and
//! every later file is deleted (a crash can only tear the tail; anything
//! after damage cannot be trusted to follow it). So does a file that is not
//! the last but ends without its seal: its tail was lost, so nothing written
//! after it was acknowledged (the flusher fsyncs a rolled file, seal
//! included, before anything written after it).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::codec::{self, Decoded, Format, Kind};
use crate::error::RaftLogError;
use crate::files;
use crate::log::LogFile;
use crate::memtable::{Loc, PartitionState, ReplayPartition};

pub(crate) struct Recovered {
    pub(crate) files: BTreeMap<u64, LogFile>,
    pub(crate) parts: HashMap<u32, PartitionState>,
    /// Highest sequence number seen, kept or not: new files go above it.
    pub(crate) max_seq: u64,
}

/// How one file's scan ended.
enum Scan {
    /// All records good up to this offset; the file is kept whole.
    Clean(u64, Format),
    /// Damage at this offset; the file is cut there and later files dropped.
    Cut(u64, &'static str, Format),
    /// No valid header: the file and later ones are dropped.
    NoHeader,
}

pub(crate) fn recover(dir: &Path) -> Result<Recovered, RaftLogError> {
    // Files gc renamed out of the log but had not erased when the process stopped.
    chronos_wal::retire::erase_leftovers(dir).map_err(RaftLogError::io("erase retired files"))?;
    let listed = files::list(dir)?;
    let max_seq = listed.last().map_or(0, |(seq, _)| *seq);
    let mut replay: HashMap<u32, ReplayPartition> = HashMap::new();
    let mut kept = BTreeMap::new();
    let mut cut_at = None;
    for (i, (seq, path)) in listed.iter().enumerate() {
        let mut file = files::open_rw(path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(RaftLogError::io("read file"))?;
        let last = i + 1 == listed.len();
        match scan(*seq, &data, last, &mut replay) {
            Scan::Clean(len, format) => {
                // Zeros after a version 1 file's records are trimmed; a
                // version 2 file keeps its blocks (past its seal, or a last
                // file's records, lie zeros or an earlier use's records).
                let allocated = match format {
                    Format::V1 if len < data.len() as u64 => {
                        file.set_len(len)
                            .and_then(|()| file.sync_all())
                            .map_err(RaftLogError::io("trim zero-filled tail"))?;
                        len
                    }
                    _ => data.len() as u64,
                };
                kept.insert(
                    *seq,
                    LogFile {
                        file: Arc::new(file),
                        len,
                        allocated,
                        format,
                    },
                );
            }
            Scan::Cut(len, why, format) => {
                // After a crash the newest file ends in a torn record or,
                // when the file was a reused spare, in its earlier use's
                // bytes: nothing there was acknowledged.
                tracing::warn!(
                    file = %path.display(), offset = len, cut_bytes = data.len() as u64 - len,
                    reason = why, last,
                    "raft log: cutting the file after its last whole record (torn by a crash, an earlier use's bytes, or corrupt)"
                );
                file.set_len(len)
                    .map_err(RaftLogError::io("truncate torn file"))?;
                file.sync_all()
                    .map_err(RaftLogError::io("fsync truncated file"))?;
                kept.insert(
                    *seq,
                    LogFile {
                        file: Arc::new(file),
                        len,
                        allocated: len,
                        format,
                    },
                );
                cut_at = Some(i + 1);
                break;
            }
            Scan::NoHeader => {
                cut_at = Some(i);
                break;
            }
        }
    }
    if let Some(from) = cut_at {
        for (_, path) in &listed[from..] {
            tracing::warn!(file = %path.display(), "raft log: dropping file after the cut");
            std::fs::remove_file(path).map_err(RaftLogError::io("remove file after cut"))?;
        }
        files::sync_dir(dir)?;
    }
    let parts = replay
        .into_iter()
        .map(|(p, r)| (p, r.finish(p)))
        .filter(|(_, s)| !s.is_blank())
        .collect();
    Ok(Recovered {
        files: kept,
        parts,
        max_seq,
    })
}

/// Applies the good records of one file; says where (and whether) it ends cleanly.
fn scan(seq: u64, data: &[u8], last: bool, replay: &mut HashMap<u32, ReplayPartition>) -> Scan {
    let Some((format, mut pos)) = codec::read_header(seq, data) else {
        return Scan::NoHeader;
    };
    loop {
        match codec::decode(&data[pos..], format) {
            Decoded::End => {
                return match format {
                    Format::V2 { .. } if !last => {
                        Scan::Cut(pos as u64, "file ends without its seal", format)
                    }
                    _ => Scan::Clean(pos as u64, format),
                }
            }
            Decoded::Bad(why) => return Scan::Cut(pos as u64, why, format),
            Decoded::Record(record, n) if record.kind == Kind::Seal => {
                return Scan::Clean((pos + n) as u64, format);
            }
            Decoded::Record(record, n) => {
                let loc = Loc {
                    file_seq: seq,
                    offset: pos as u64,
                    len: n as u32,
                };
                replay
                    .entry(record.partition)
                    .or_default()
                    .apply(&record, loc);
                pos += n;
            }
        }
    }
}
