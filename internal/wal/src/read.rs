//! Positioning readers: pick the segment and sparse-index checkpoint to start
//! from (under the writer lock, briefly), then hand a [`WalIter`] the byte
//! ranges to stream (without the lock).

use crate::codec::SEGMENT_HEADER_BYTES;
use crate::error::WalError;
use crate::index::{by_index, by_seq, by_ts, IndexEntry};
use crate::iter::{Span, WalIter};
use crate::segment::Segment;
use crate::wal::Wal;

/// Byte ranges from `pos_bytes` in segment `k` to the end of the log.
fn spans_from(segments: &[Segment], k: usize, pos_bytes: u64) -> Vec<Span> {
    segments[k..]
        .iter()
        .enumerate()
        .map(|(i, seg)| Span {
            path: seg.path.clone(),
            start_bytes: if i == 0 {
                pos_bytes
            } else {
                SEGMENT_HEADER_BYTES
            },
            end_bytes: seg.size_bytes,
        })
        .collect()
}

/// Start of the last checkpoint, over the whole log, for which `before`
/// holds; `before` must be true for a prefix of all checkpoints. Falls back
/// to the start of the log.
fn seek_checkpoint(
    segments: &[Segment],
    before: impl Fn(&IndexEntry) -> bool + Copy,
) -> (usize, u64) {
    // Only the last segment can lack checkpoints (header-only), and it is last.
    let k = segments.partition_point(|s| s.index.first().is_some_and(before));
    match k.checked_sub(1) {
        None => (0, SEGMENT_HEADER_BYTES),
        Some(k) => {
            let entry = segments[k].index.last_where(before);
            debug_assert!(
                entry.is_some(),
                "the segment's first checkpoint satisfies the predicate"
            );
            (k, entry.map_or(SEGMENT_HEADER_BYTES, |e| e.pos_bytes))
        }
    }
}

impl Wal {
    /// Records from exactly `index` to the end. Empty if `index` is past the
    /// end or the log is empty; [`WalError::BelowFirstIndex`] if it was removed.
    pub fn iter_from_index(&self, index: u64) -> Result<WalIter, WalError> {
        let inner = self.shared.inner.lock();
        let (Some(first), Some(last)) = (inner.first_index(), inner.last_header()) else {
            return Ok(WalIter::empty());
        };
        if index < first {
            return Err(WalError::BelowFirstIndex {
                requested: index,
                first,
            });
        }
        if index > last.index {
            return Ok(WalIter::empty());
        }
        let (k, pos) = seek_checkpoint(&inner.segments, by_index(index));
        Ok(WalIter::new(spans_from(&inner.segments, k, pos), index))
    }

    /// Every stored record, oldest first (empty if the log is empty). Unlike
    /// `iter_from_index(first_index())`, cannot race with retention.
    pub fn iter_all(&self) -> WalIter {
        let inner = self.shared.inner.lock();
        if inner.first_index().is_none() {
            return WalIter::empty();
        }
        WalIter::new(spans_from(&inner.segments, 0, SEGMENT_HEADER_BYTES), 0)
    }

    /// Records from the last checkpoint whose record has `seq <=` the given
    /// seq (or the log's start). No record containing `seq` is skipped;
    /// earlier records may be included, so the caller filters.
    pub fn iter_from_seq(&self, seq: u64) -> Result<WalIter, WalError> {
        let inner = self.shared.inner.lock();
        if inner.first_index().is_none() {
            return Ok(WalIter::empty());
        }
        let (k, pos) = seek_checkpoint(&inner.segments, by_seq(seq));
        Ok(WalIter::new(spans_from(&inner.segments, k, pos), 0))
    }

    /// Records from the last checkpoint before which every record has
    /// `ts_ms < ts_ms` (or the log's start): every record with a timestamp
    /// `>= ts_ms` is at or after the start. The caller filters.
    pub fn iter_from_ts(&self, ts_ms: u64) -> Result<WalIter, WalError> {
        let inner = self.shared.inner.lock();
        if inner.first_index().is_none() {
            return Ok(WalIter::empty());
        }
        let (k, pos) = seek_checkpoint(&inner.segments, by_ts(ts_ms));
        Ok(WalIter::new(spans_from(&inner.segments, k, pos), 0))
    }
}
