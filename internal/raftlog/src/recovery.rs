//! Open-time replay. Files are read in sequence order and their records
//! applied to a tolerant per-partition index. The first torn or corrupt
//! record cuts the log: its file is truncated at the last good record and
//! every later file is deleted (a crash can only tear the tail; anything
//! after damage cannot be trusted to follow it).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::codec::{self, Decoded, FILE_HEADER_BYTES};
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
    /// All records good; the file is kept whole.
    Clean(u64),
    /// Damage at this offset; the file is cut there and later files dropped.
    Cut(u64, &'static str),
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
        match scan(*seq, &data, &mut replay) {
            Scan::Clean(len) => {
                // Zeros past the records (space filled ahead): never written
                // again, since open starts a new file, so give them back.
                if len < data.len() as u64 {
                    file.set_len(len)
                        .and_then(|()| file.sync_all())
                        .map_err(RaftLogError::io("trim zero-filled tail"))?;
                }
                kept.insert(
                    *seq,
                    LogFile {
                        file: Arc::new(file),
                        len,
                        zeroed: len,
                    },
                );
            }
            Scan::Cut(len, why) => {
                tracing::warn!(
                    file = %path.display(), offset = len, cut_bytes = data.len() as u64 - len,
                    reason = why, "raft log: cutting torn or corrupt tail"
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
                        zeroed: len,
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
fn scan(seq: u64, data: &[u8], replay: &mut HashMap<u32, ReplayPartition>) -> Scan {
    if !codec::header_ok(data) {
        return Scan::NoHeader;
    }
    let mut pos = FILE_HEADER_BYTES as usize;
    loop {
        match codec::decode(&data[pos..]) {
            Decoded::End => return Scan::Clean(pos as u64),
            Decoded::Bad(why) => return Scan::Cut(pos as u64, why),
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
