//! File naming and the few filesystem calls the log makes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::codec::{self, Decoded, Format, Kind};
use crate::error::RaftLogError;
use crate::memtable::Loc;

pub(crate) const EXTENSION: &str = "rlog";

pub(crate) fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.{EXTENSION}"))
}

/// `Some(seq)` when `name` is a log file name.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".rlog")?;
    if stem.len() != 16 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Log files in `dir`, ascending by sequence number.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, RaftLogError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(RaftLogError::io("list dir"))? {
        let entry = entry.map_err(RaftLogError::io("list dir"))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_name) {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn open_rw(path: &Path) -> Result<File, RaftLogError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(RaftLogError::io("open file"))
}

pub(crate) fn create_new(path: &Path) -> Result<File, RaftLogError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(RaftLogError::io("create file"))
}

/// Makes file creations and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), RaftLogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(RaftLogError::io("fsync dir"))
}

/// Reads back the payload of the entry at `loc`, checking that the record is
/// the one the index says it is.
pub(crate) fn read_entry(
    file: &File,
    format: Format,
    loc: Loc,
    partition: u32,
    index: u64,
) -> Result<Vec<u8>, RaftLogError> {
    let mut buf = vec![0u8; loc.len as usize];
    file.read_exact_at(&mut buf, loc.offset)
        .map_err(RaftLogError::io("read entry"))?;
    let corrupt = |reason| RaftLogError::Corrupt {
        file_seq: loc.file_seq,
        offset: loc.offset,
        reason,
    };
    match codec::decode(&buf, format) {
        Decoded::Record(r, n) => {
            if n != buf.len() || !matches!(r.kind, Kind::Entry | Kind::Rewrite) {
                return Err(corrupt("not an entry record"));
            }
            if r.partition != partition || r.index != index {
                return Err(corrupt("record belongs to another entry"));
            }
            Ok(r.body.to_vec())
        }
        Decoded::End => Err(corrupt("empty record")),
        Decoded::Bad(reason) => Err(corrupt(reason)),
    }
}
