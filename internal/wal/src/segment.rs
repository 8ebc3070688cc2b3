//! One segment file as the WAL sees it: its name, its written length, its last
//! record and its sparse index; plus the file-level operations on it (scan,
//! load or write the sealed `.idx`).
//!
//! A segment is named `{first_index:020}.wal`. Only the last (active)
//! segment is ever written; every other segment is sealed and non-empty.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::codec::{
    self, check_segment_header, encoded_len_bytes, read_record, Frame, HeaderCheck, RecordHeader,
    SEGMENT_HEADER_BYTES,
};
use crate::error::{CorruptReason, WalError};
use crate::index::{decode_idx, encode_idx, IndexEntry, SealedMeta, SparseIndex};

const READ_BUFFER_BYTES: usize = 64 * 1024;

/// In-memory description of one segment file.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub first_index: u64,
    pub path: PathBuf,
    /// Length of the valid, written part of the file.
    pub size_bytes: u64,
    /// The segment's last record, `None` while it holds only the header.
    pub last: Option<RecordHeader>,
    pub last_record_pos: u64,
    /// Newest `ts_ms` of any record in this segment (an upper bound after a
    /// truncation), used by age-based retention.
    pub max_ts_ms: u64,
    pub index: SparseIndex,
}

impl Segment {
    pub fn empty(dir: &Path, first_index: u64) -> Self {
        Segment {
            first_index,
            path: segment_path(dir, first_index),
            size_bytes: SEGMENT_HEADER_BYTES,
            last: None,
            last_record_pos: 0,
            max_ts_ms: 0,
            index: SparseIndex::default(),
        }
    }

    pub fn has_records(&self) -> bool {
        self.last.is_some()
    }

    /// The index the next record in this segment must carry.
    pub fn next_index(&self) -> u64 {
        self.last.map_or(self.first_index, |h| h.index + 1)
    }

    /// Accounts for a record of `len_bytes` written at `pos_bytes`.
    /// `max_ts_before_ms` is the log-wide max `ts_ms` of earlier records.
    pub fn note_record(
        &mut self,
        pos_bytes: u64,
        header: &RecordHeader,
        len_bytes: u64,
        max_ts_before_ms: u64,
        interval_bytes: u64,
    ) {
        debug_assert_eq!(
            pos_bytes, self.size_bytes,
            "records are appended at the end"
        );
        debug_assert_eq!(header.index, self.next_index(), "indices are contiguous");
        if self.index.wants_entry_at(pos_bytes, interval_bytes) {
            self.index.push(IndexEntry {
                index: header.index,
                seq: header.seq,
                max_ts_before_ms,
                pos_bytes,
            });
        }
        self.last = Some(*header);
        self.last_record_pos = pos_bytes;
        self.size_bytes = pos_bytes + len_bytes;
        self.max_ts_ms = self.max_ts_ms.max(header.ts_ms);
    }

    /// Log-wide max `ts_ms` up to the end of this segment, given the value
    /// before it (checkpoints may carry a higher, older bound).
    pub fn running_max_ts_after(&self, before_ms: u64) -> u64 {
        let from_index = self.index.last().map_or(0, |e| e.max_ts_before_ms);
        before_ms.max(self.max_ts_ms).max(from_index)
    }

    fn sealed_meta(&self) -> Option<SealedMeta> {
        let last = self.last?;
        Some(SealedMeta {
            first_index: self.first_index,
            size_bytes: self.size_bytes,
            last_record_pos: self.last_record_pos,
            last,
            max_ts_ms: self.max_ts_ms,
        })
    }
}

pub(crate) fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}.wal"))
}

pub(crate) fn idx_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}.idx"))
}

/// File kinds found in a WAL directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Segment(u64),
    Index(u64),
    TempIndex,
}

pub(crate) fn classify(name: &str) -> Option<FileKind> {
    if name.ends_with(".idx.tmp") {
        return Some(FileKind::TempIndex);
    }
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let first_index = stem.parse().ok()?;
    match ext {
        "wal" => Some(FileKind::Segment(first_index)),
        "idx" => Some(FileKind::Index(first_index)),
        _ => None,
    }
}

/// Result of reading a segment file from its start.
#[derive(Debug)]
pub(crate) enum Scan {
    /// The file is shorter than a header or has the wrong magic.
    Garbage { file_len: u64 },
    /// A header of ours with a version we cannot read.
    UnsupportedVersion(u16),
    /// The valid prefix as a segment; `file_len > segment.size_bytes` means
    /// the rest is torn (`torn` says why).
    Valid {
        segment: Segment,
        file_len: u64,
        torn: Option<CorruptReason>,
    },
}

/// Reads a whole segment, validating every record (length, CRC, index
/// contiguity starting at `first_index`), and rebuilds its sparse index.
pub(crate) fn scan_segment(
    dir: &Path,
    first_index: u64,
    max_ts_before_ms: u64,
    interval_bytes: u64,
) -> Result<Scan, WalError> {
    let path = segment_path(dir, first_index);
    let file = File::open(&path).map_err(|e| WalError::io("open segment", &path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| WalError::io("stat segment", &path, e))?
        .len();
    if file_len < SEGMENT_HEADER_BYTES {
        return Ok(Scan::Garbage { file_len });
    }
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    reader
        .read_exact(&mut header)
        .map_err(|e| WalError::io("read segment header", &path, e))?;
    match check_segment_header(&header) {
        HeaderCheck::Valid => {}
        HeaderCheck::Garbage => return Ok(Scan::Garbage { file_len }),
        HeaderCheck::UnsupportedVersion(v) => return Ok(Scan::UnsupportedVersion(v)),
    }
    let mut segment = Segment::empty(dir, first_index);
    let mut running_max_ms = max_ts_before_ms;
    let mut payload = Vec::new();
    let mut torn = None;
    loop {
        let pos = segment.size_bytes;
        let frame = read_record(&mut reader, file_len - pos, &mut payload)
            .map_err(|e| WalError::io("read segment", &path, e))?;
        let header = match frame {
            Frame::End => break,
            Frame::Torn(reason) => {
                torn = Some(reason);
                break;
            }
            Frame::Record(h) => h,
        };
        let expected = segment.next_index();
        if header.index != expected {
            torn = Some(CorruptReason::NonContiguous {
                expected,
                found: header.index,
            });
            break;
        }
        let len = encoded_len_bytes(payload.len());
        segment.note_record(pos, &header, len, running_max_ms, interval_bytes);
        running_max_ms = running_max_ms.max(header.ts_ms);
    }
    Ok(Scan::Valid {
        segment,
        file_len,
        torn,
    })
}

/// Loads a sealed segment's description from its `.idx`, if that file exists
/// and agrees with the segment (length, and the last record re-read from the
/// segment). `None` means "rebuild by scanning".
pub(crate) fn load_sealed(dir: &Path, first_index: u64) -> Option<Segment> {
    let idx = idx_path(dir, first_index);
    let bytes = match fs::read(&idx) {
        Ok(b) => b,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %idx.display(), error = %e, "cannot read sparse index; rebuilding");
            }
            return None;
        }
    };
    let (meta, index) = match decode_idx(&bytes) {
        Ok(decoded) => decoded,
        Err(reason) => {
            tracing::warn!(path = %idx.display(), reason, "invalid sparse index; rebuilding");
            return None;
        }
    };
    let path = segment_path(dir, first_index);
    if meta.first_index != first_index || !last_record_matches(&path, &meta) {
        tracing::warn!(path = %idx.display(), "sparse index disagrees with its segment; rebuilding");
        return None;
    }
    Some(Segment {
        first_index,
        path,
        size_bytes: meta.size_bytes,
        last: Some(meta.last),
        last_record_pos: meta.last_record_pos,
        max_ts_ms: meta.max_ts_ms,
        index,
    })
}

/// True if the segment file is exactly `meta.size_bytes` long, has a valid
/// header, and its record at `last_record_pos` is `meta.last` and ends the file.
fn last_record_matches(path: &Path, meta: &SealedMeta) -> bool {
    let check = || -> std::io::Result<bool> {
        let mut file = File::open(path)?;
        if file.metadata()?.len() != meta.size_bytes {
            return Ok(false);
        }
        let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
        file.read_exact(&mut header)?;
        if check_segment_header(&header) != HeaderCheck::Valid {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(meta.last_record_pos))?;
        let mut payload = Vec::new();
        let available = meta.size_bytes - meta.last_record_pos;
        let frame = read_record(&mut BufReader::new(file), available, &mut payload)?;
        Ok(frame == Frame::Record(meta.last)
            && meta.last_record_pos + encoded_len_bytes(payload.len()) == meta.size_bytes)
    };
    check().unwrap_or(false)
}

/// Writes a sealed segment's `.idx` (temp file + rename). It is not fsynced:
/// it is a cache, validated on load and rebuilt when wrong.
pub(crate) fn write_sealed_index(dir: &Path, segment: &Segment) -> Result<(), WalError> {
    let Some(meta) = segment.sealed_meta() else {
        return Ok(());
    };
    let bytes = encode_idx(&meta, &segment.index);
    let final_path = idx_path(dir, segment.first_index);
    let tmp_path = dir.join(format!("{:020}.idx.tmp", segment.first_index));
    fs::write(&tmp_path, &bytes).map_err(|e| WalError::io("write sparse index", &tmp_path, e))?;
    fs::rename(&tmp_path, &final_path)
        .map_err(|e| WalError::io("rename sparse index", &final_path, e))
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_if_exists(path: &Path) -> Result<(), WalError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(WalError::io("remove file", path, e)),
    }
}

/// Makes creations, renames and deletions in `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io("fsync directory", dir, e))
}

/// Opens an existing segment for writing (positioned writes only).
pub(crate) fn open_for_write(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| WalError::io("open segment for write", path, e))
}

/// Creates (or replaces) a segment file holding only the header.
pub(crate) fn create_segment_file(path: &Path) -> Result<File, WalError> {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| WalError::io("create segment", path, e))?;
    file.write_all_at(&codec::segment_header(), 0)
        .map_err(|e| WalError::io("write segment header", path, e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let dir = Path::new("/x");
        let p = segment_path(dir, 42);
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert_eq!(name, "00000000000000000042.wal");
        assert_eq!(classify(name), Some(FileKind::Segment(42)));
        assert_eq!(
            classify("00000000000000000042.idx"),
            Some(FileKind::Index(42))
        );
        assert_eq!(
            classify("00000000000000000042.idx.tmp"),
            Some(FileKind::TempIndex)
        );
        assert_eq!(classify("42.wal"), None);
        assert_eq!(classify("notes.txt"), None);
    }
}
