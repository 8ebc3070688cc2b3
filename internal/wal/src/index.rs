//! The sparse index of one segment, and its sealed on-disk form (`.idx`).
//!
//! An entry is taken at the first record of a segment and then at the first
//! record at least `index_interval_bytes` past the previous entry. Each entry
//! records the record's Raft index, its seq, its byte position, and
//! `max_ts_before_ms`: an upper bound on the `ts_ms` of every record strictly
//! before it in the whole log. **All four fields are monotone across the
//! entries of the log** (index strictly), which is what makes binary search
//! by index, seq or time valid.
//!
//! The `.idx` file of a sealed segment is a cache: it carries a CRC and the
//! segment's length and last record, and is rebuilt by scanning whenever it
//! disagrees with the segment file.

use crate::codec::{le_u32, le_u64, RecordHeader, SEGMENT_HEADER_BYTES};

/// One checkpoint: where a record starts and what is known there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub index: u64,
    pub seq: u64,
    pub max_ts_before_ms: u64,
    pub pos_bytes: u64,
}

/// Checkpoints of one segment in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SparseIndex {
    entries: Vec<IndexEntry>,
}

impl SparseIndex {
    /// Whether a record starting at `pos_bytes` should get a checkpoint.
    pub fn wants_entry_at(&self, pos_bytes: u64, interval_bytes: u64) -> bool {
        match self.entries.last() {
            None => true,
            Some(last) => pos_bytes.saturating_sub(last.pos_bytes) >= interval_bytes,
        }
    }

    pub fn push(&mut self, entry: IndexEntry) {
        if let Some(last) = self.entries.last() {
            debug_assert!(entry.index > last.index, "index entries must increase");
            debug_assert!(entry.seq >= last.seq, "seq must not decrease");
            debug_assert!(
                entry.max_ts_before_ms >= last.max_ts_before_ms,
                "max_ts_before is monotone"
            );
            debug_assert!(entry.pos_bytes > last.pos_bytes, "positions must increase");
        }
        self.entries.push(entry);
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    pub fn first(&self) -> Option<&IndexEntry> {
        self.entries.first()
    }

    pub fn last(&self) -> Option<&IndexEntry> {
        self.entries.last()
    }

    /// The last checkpoint for which `pred` holds; `pred` must hold for a
    /// prefix of the entries (see [`by_index`], [`by_seq`], [`by_ts`]).
    pub fn last_where(&self, pred: impl FnMut(&IndexEntry) -> bool) -> Option<IndexEntry> {
        let n = self.entries.partition_point(pred);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last checkpoint with `index <= target`.
    pub fn floor_by_index(&self, target: u64) -> Option<IndexEntry> {
        self.last_where(by_index(target))
    }

    /// Drops every checkpoint at or after `pos_bytes` (file truncated there).
    pub fn truncate_at_pos(&mut self, pos_bytes: u64) {
        let keep = self.entries.partition_point(|e| e.pos_bytes < pos_bytes);
        self.entries.truncate(keep);
    }
}

/// Checkpoints at or before record `target`.
pub(crate) fn by_index(target: u64) -> impl Fn(&IndexEntry) -> bool + Copy {
    move |e| e.index <= target
}

/// Checkpoints whose record starts at or before event `seq`: no record
/// holding `seq` lies before the last of them.
pub(crate) fn by_seq(seq: u64) -> impl Fn(&IndexEntry) -> bool + Copy {
    move |e| e.seq <= seq
}

/// Checkpoints before which every record is older than `ts_ms`.
pub(crate) fn by_ts(ts_ms: u64) -> impl Fn(&IndexEntry) -> bool + Copy {
    move |e| e.max_ts_before_ms < ts_ms
}

const IDX_MAGIC: &[u8; 6] = b"CHRIDX";
const IDX_VERSION: u16 = 1;
const IDX_FIXED_BYTES: usize = 8 + 8 + 8 + 8 + 32 + 8 + 4;
const IDX_ENTRY_BYTES: usize = 32;

/// What a sealed `.idx` says about its segment besides the checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SealedMeta {
    pub first_index: u64,
    pub size_bytes: u64,
    pub last_record_pos: u64,
    pub last: RecordHeader,
    pub max_ts_ms: u64,
}

/// Encodes a sealed segment's index file.
pub(crate) fn encode_idx(meta: &SealedMeta, index: &SparseIndex) -> Vec<u8> {
    let entries = index.entries();
    let mut out = Vec::with_capacity(IDX_FIXED_BYTES + entries.len() * IDX_ENTRY_BYTES + 4);
    out.extend_from_slice(IDX_MAGIC);
    out.extend_from_slice(&IDX_VERSION.to_le_bytes());
    for v in [
        meta.first_index,
        meta.size_bytes,
        meta.last_record_pos,
        meta.last.term,
        meta.last.index,
        meta.last.seq,
        meta.last.ts_ms,
        meta.max_ts_ms,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    // Lossless in practice: a segment cannot hold 2^32 checkpoints.
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        for v in [e.index, e.seq, e.max_ts_before_ms, e.pos_bytes] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and sanity-checks an index file. Any inconsistency is an `Err`
/// with a short reason; the caller then rebuilds by scanning.
pub(crate) fn decode_idx(bytes: &[u8]) -> Result<(SealedMeta, SparseIndex), &'static str> {
    if bytes.len() < IDX_FIXED_BYTES + 4 {
        return Err("too short");
    }
    let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != le_u32(crc_bytes) {
        return Err("crc mismatch");
    }
    if &body[..6] != IDX_MAGIC || u16::from_le_bytes([body[6], body[7]]) != IDX_VERSION {
        return Err("bad magic or version");
    }
    let word = |i: usize| le_u64(&body[8 + i * 8..16 + i * 8]);
    let meta = SealedMeta {
        first_index: word(0),
        size_bytes: word(1),
        last_record_pos: word(2),
        last: RecordHeader {
            term: word(3),
            index: word(4),
            seq: word(5),
            ts_ms: word(6),
        },
        max_ts_ms: word(7),
    };
    let count = le_u32(&body[IDX_FIXED_BYTES - 4..IDX_FIXED_BYTES]) as usize;
    let entry_bytes = &body[IDX_FIXED_BYTES..];
    if entry_bytes.len() != count.saturating_mul(IDX_ENTRY_BYTES) {
        return Err("entry count does not match length");
    }
    let mut index = SparseIndex::default();
    for chunk in entry_bytes.chunks_exact(IDX_ENTRY_BYTES) {
        let entry = IndexEntry {
            index: le_u64(&chunk[0..8]),
            seq: le_u64(&chunk[8..16]),
            max_ts_before_ms: le_u64(&chunk[16..24]),
            pos_bytes: le_u64(&chunk[24..32]),
        };
        if let Some(prev) = index.last() {
            let monotone = entry.index > prev.index
                && entry.seq >= prev.seq
                && entry.max_ts_before_ms >= prev.max_ts_before_ms
                && entry.pos_bytes > prev.pos_bytes;
            if !monotone {
                return Err("entries not monotone");
            }
        }
        if entry.pos_bytes > meta.last_record_pos || entry.index > meta.last.index {
            return Err("entry beyond the last record");
        }
        index.push(entry);
    }
    match index.first() {
        Some(first)
            if first.pos_bytes == SEGMENT_HEADER_BYTES && first.index == meta.first_index => {}
        _ => return Err("first entry is not the segment's first record"),
    }
    if meta.last_record_pos >= meta.size_bytes {
        return Err("last record position beyond segment size");
    }
    Ok((meta, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, seq: u64, max_ts_before_ms: u64, pos_bytes: u64) -> IndexEntry {
        IndexEntry {
            index,
            seq,
            max_ts_before_ms,
            pos_bytes,
        }
    }

    fn sample() -> SparseIndex {
        let mut idx = SparseIndex::default();
        idx.push(entry(10, 100, 0, 8));
        idx.push(entry(20, 100, 50, 1000));
        idx.push(entry(30, 150, 50, 2000));
        idx.push(entry(40, 300, 90, 3000));
        idx
    }

    #[test]
    fn checkpoint_spacing_follows_the_interval() {
        let mut idx = SparseIndex::default();
        assert!(idx.wants_entry_at(8, 4096));
        idx.push(entry(1, 0, 0, 8));
        assert!(!idx.wants_entry_at(8 + 4095, 4096));
        assert!(idx.wants_entry_at(8 + 4096, 4096));
    }

    #[test]
    fn floor_by_index() {
        let idx = sample();
        assert_eq!(idx.floor_by_index(9), None);
        assert_eq!(idx.floor_by_index(10).map(|e| e.pos_bytes), Some(8));
        assert_eq!(idx.floor_by_index(29).map(|e| e.pos_bytes), Some(1000));
        assert_eq!(idx.floor_by_index(30).map(|e| e.pos_bytes), Some(2000));
        assert_eq!(
            idx.floor_by_index(u64::MAX).map(|e| e.pos_bytes),
            Some(3000)
        );
    }

    #[test]
    fn floor_by_seq_takes_the_last_of_equal_seqs() {
        let idx = sample();
        assert_eq!(idx.last_where(by_seq(99)), None);
        assert_eq!(idx.last_where(by_seq(100)).map(|e| e.pos_bytes), Some(1000));
        assert_eq!(idx.last_where(by_seq(299)).map(|e| e.pos_bytes), Some(2000));
        assert_eq!(idx.last_where(by_seq(300)).map(|e| e.pos_bytes), Some(3000));
    }

    #[test]
    fn ts_search_is_strictly_below() {
        let idx = sample();
        assert_eq!(idx.last_where(by_ts(0)), None);
        assert_eq!(idx.last_where(by_ts(1)).map(|e| e.pos_bytes), Some(8));
        assert_eq!(idx.last_where(by_ts(50)).map(|e| e.pos_bytes), Some(8));
        assert_eq!(idx.last_where(by_ts(51)).map(|e| e.pos_bytes), Some(2000));
        assert_eq!(idx.last_where(by_ts(91)).map(|e| e.pos_bytes), Some(3000));
    }

    #[test]
    fn truncate_at_pos_drops_entries_at_and_after() {
        let mut idx = sample();
        idx.truncate_at_pos(2000);
        assert_eq!(idx.entries().len(), 2);
        idx.truncate_at_pos(8);
        assert!(idx.entries().is_empty());
    }

    fn meta() -> SealedMeta {
        SealedMeta {
            first_index: 10,
            size_bytes: 4000,
            last_record_pos: 3500,
            last: RecordHeader {
                term: 2,
                index: 45,
                seq: 310,
                ts_ms: 95,
            },
            max_ts_ms: 95,
        }
    }

    #[test]
    fn idx_file_round_trips() {
        let bytes = encode_idx(&meta(), &sample());
        assert_eq!(decode_idx(&bytes), Ok((meta(), sample())));
    }

    #[test]
    fn idx_file_rejects_any_flip_or_truncation() {
        let bytes = encode_idx(&meta(), &sample());
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(decode_idx(&damaged).is_err(), "flip at {i}");
            assert!(decode_idx(&bytes[..i]).is_err(), "truncation at {i}");
        }
    }

    #[test]
    fn idx_file_rejects_inconsistent_contents_with_valid_crc() {
        let mut bad_meta = meta();
        bad_meta.last_record_pos = 4000;
        assert!(decode_idx(&encode_idx(&bad_meta, &sample())).is_err());
        let mut wrong_first = meta();
        wrong_first.first_index = 11;
        assert!(decode_idx(&encode_idx(&wrong_first, &sample())).is_err());
    }
}
