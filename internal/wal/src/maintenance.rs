//! Removing records: `truncate_from` (Raft conflict resolution, cuts the
//! newest records), `remove_segments` (retention, deletes the oldest whole
//! sealed segments) and `restart_at` (drops the whole log so it can continue
//! at a later index: the caller installed a snapshot past its end). Raft's purge is logical and belongs to the caller; this
//! module only deletes what the caller says it may.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::append::create_active;
use crate::codec::{encoded_len_bytes, read_record, Frame, RecordHeader};
use crate::error::{CorruptReason, WalError};
use crate::options::{RemovedSegments, Retention};
use crate::retire;
use crate::segment::{fsync_dir, idx_path, open_for_write, remove_if_exists, Segment};
use crate::wal::{Inner, SegmentFile, Shared, Wal};

impl Wal {
    /// Removes every record with index `>= index` and fsyncs the result.
    /// Appends then continue at `index` (or at any index if the log became
    /// empty). A failure here puts the WAL in the failed state.
    pub fn truncate_from(&self, index: u64) -> Result<(), WalError> {
        self.rewrite(|shared, inner| truncate_locked(shared, inner, index))
    }

    /// Runs `change` with the writer lock held; its failure fails the WAL.
    fn rewrite(
        &self,
        change: impl FnOnce(&Shared, &mut Inner) -> Result<(), WalError>,
    ) -> Result<(), WalError> {
        let mut inner = self.shared.inner.lock();
        self.shared.check_writable(&inner)?;
        let result = change(&self.shared, &mut inner);
        if let Err(e) = &result {
            self.shared.mark_failed(e);
        }
        inner.debug_check();
        result
    }

    /// Deletes every segment and restarts the log, empty, with its next
    /// record expected at `next_index`: for a caller whose log ends before a
    /// point it has moved past by other means (a Raft snapshot installed
    /// beyond the last index). The log has no hole afterwards — it starts at
    /// `next_index` — and reads below it get [`WalError::BelowFirstIndex`]
    /// once records exist (an empty log reads as empty).
    ///
    /// Crash-safe in the sense that a crash leaves either the old log, a
    /// contiguous suffix of it (oldest segments go first), or the new empty
    /// one; the caller must therefore record *why* it restarts (e.g. its
    /// purge point) before calling, and redo the call if it finds the log
    /// still ending before that point. Callbacks of earlier appends still
    /// run, but the durable index restarts. A failure puts the WAL in the
    /// failed state.
    pub fn restart_at(&self, next_index: u64) -> Result<(), WalError> {
        if next_index == u64::MAX {
            return Err(WalError::InvalidIndex { index: next_index });
        }
        self.rewrite(|shared, inner| restart_locked(shared, inner, next_index))
    }

    /// Deletes the oldest sealed segments (never the active one) whose last
    /// index is `<= upto_index` and that are older than `policy.max_age` (by
    /// their newest record's `ts_ms`) or must go to bring the log under
    /// `policy.max_bytes`. Stops at the first segment that qualifies for
    /// neither, so the log stays contiguous.
    /// The last index of the segments `remove_segments(policy, upto_index)`
    /// would delete now, without deleting anything; `None` when it would
    /// delete none. Lets the caller first give up those entries elsewhere
    /// (Raft purges its log up to here).
    pub fn retention_point(&self, policy: &Retention, upto_index: u64) -> Option<u64> {
        let inner = self.shared.inner.lock();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let victims = pick_victims(&inner.segments, policy, upto_index, now_ms);
        inner.segments[..victims]
            .iter()
            .rev()
            .find_map(|s| s.last.map(|h| h.index))
    }

    pub fn remove_segments(
        &self,
        policy: &Retention,
        upto_index: u64,
    ) -> Result<RemovedSegments, WalError> {
        let victims: Vec<Segment> = {
            let mut inner = self.shared.inner.lock();
            if inner.closed {
                return Err(WalError::Closed);
            }
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let n = pick_victims(&inner.segments, policy, upto_index, now_ms);
            let victims = inner.segments.drain(..n).collect();
            self.shared.refresh_layout_stats(&inner);
            inner.debug_check();
            victims
        };
        // Removed outside the lock, and renamed out of the log before their
        // blocks are freed (`retire`): freeing them waits for the disk's
        // discard, and appends would wait with it. A segment left by a failed
        // rename holds only records retention let go; opening the log finds
        // it again.
        let dir = &self.shared.dir;
        let mut removed = RemovedSegments::default();
        let mut retired = Vec::with_capacity(victims.len());
        for seg in &victims {
            let path = retire::retire(&seg.path)
                .map_err(|e| WalError::io("retire segment", &seg.path, e))?;
            retired.push(path);
            remove_if_exists(&idx_path(dir, seg.first_index))?;
            removed.segments += 1;
            removed.bytes += seg.size_bytes;
            removed.last_removed_index = seg.last.map(|h| h.index);
        }
        if removed.segments > 0 {
            fsync_dir(dir)?;
            tracing::info!(
                segments = removed.segments,
                bytes = removed.bytes,
                "retention removed segments"
            );
        }
        retire::erase_all(retired);
        Ok(removed)
    }
}

fn restart_locked(shared: &Shared, inner: &mut Inner, next_index: u64) -> Result<(), WalError> {
    let dropped = inner.segments.len();
    for seg in std::mem::take(&mut inner.segments) {
        remove_if_exists(&seg.path)?;
        remove_if_exists(&idx_path(&shared.dir, seg.first_index))?;
    }
    inner.active = None;
    inner.max_ts_ms = 0;
    inner.epoch += 1;
    shared.reset_durable(inner.epoch, None);
    create_active(shared, inner, next_index)?;
    tracing::info!(
        dropped_segments = dropped,
        next_index,
        "log restarted past its end"
    );
    Ok(())
}

/// How many of the oldest segments retention deletes.
fn pick_victims(segments: &[Segment], policy: &Retention, upto_index: u64, now_ms: u64) -> usize {
    let mut total_bytes: u64 = segments.iter().map(|s| s.size_bytes).sum();
    let sealed = segments.len().saturating_sub(1);
    let mut victims = 0;
    for seg in &segments[..sealed] {
        let Some(last) = seg.last else { break };
        if last.index > upto_index {
            break;
        }
        let too_old = policy
            .max_age
            .is_some_and(|age| u128::from(now_ms.saturating_sub(seg.max_ts_ms)) > age.as_millis());
        let too_big = policy.max_bytes.is_some_and(|max| total_bytes > max);
        if !(too_old || too_big) {
            break;
        }
        total_bytes -= seg.size_bytes;
        victims += 1;
    }
    victims
}

/// Where a truncation cuts a segment.
struct Cut {
    pos_bytes: u64,
    /// The record before the cut in this segment, and its position.
    previous: Option<(RecordHeader, u64)>,
    /// Upper bound on `ts_ms` of every record before the cut.
    max_ts_before_ms: u64,
}

/// `truncate_from` with the writer lock held (also used to roll back a
/// failed append).
pub(crate) fn truncate_locked(
    shared: &Shared,
    inner: &mut Inner,
    index: u64,
) -> Result<(), WalError> {
    let (Some(first), Some(last)) = (inner.first_index(), inner.last_header()) else {
        return Ok(());
    };
    if index > last.index {
        return Ok(());
    }
    let target = index.max(first);
    let k = inner.segments.partition_point(|s| s.first_index <= target) - 1;
    let cut = locate(&inner.segments[k], target)?;
    let was_active = k + 1 == inner.segments.len();
    let file = match (&inner.active, was_active) {
        (Some(active), true) => Arc::clone(active),
        _ => {
            let path = inner.segments[k].path.clone();
            Arc::new(SegmentFile {
                file: open_for_write(&path)?,
                path,
            })
        }
    };
    // Cut first: later segments then no longer continue the log, so a crash
    // before they are deleted still recovers to the truncated log.
    file.file
        .set_len(cut.pos_bytes)
        .map_err(|e| WalError::io("truncate segment", &file.path, e))?;
    shared.sync_file(&file)?;
    for seg in inner.segments.drain(k + 1..) {
        remove_if_exists(&seg.path)?;
        remove_if_exists(&idx_path(&shared.dir, seg.first_index))?;
    }
    remove_if_exists(&idx_path(&shared.dir, inner.segments[k].first_index))?;
    fsync_dir(&shared.dir)?;

    let seg = &mut inner.segments[k];
    seg.size_bytes = cut.pos_bytes;
    seg.index.truncate_at_pos(cut.pos_bytes);
    match cut.previous {
        Some((header, pos)) => {
            seg.last = Some(header);
            seg.last_record_pos = pos;
        }
        None => {
            seg.last = None;
            seg.last_record_pos = 0;
            seg.max_ts_ms = 0;
        }
    }
    inner.active = Some(file);
    inner.max_ts_ms = cut.max_ts_before_ms;
    inner.epoch += 1;
    shared.reset_durable(inner.epoch, inner.last_header().map(|h| h.index));
    shared.refresh_layout_stats(inner);
    Ok(())
}

/// Finds the byte position of record `target` in `seg` by scanning forward
/// from the checkpoint before it (one record earlier, so the previous record
/// is known too).
fn locate(seg: &Segment, target: u64) -> Result<Cut, WalError> {
    debug_assert!(target >= seg.first_index);
    let Some(checkpoint) = seg
        .index
        .floor_by_index(target.saturating_sub(1).max(seg.first_index))
    else {
        return Err(corrupt(
            seg,
            crate::codec::SEGMENT_HEADER_BYTES,
            CorruptReason::ShortFrame,
        ));
    };
    let file = File::open(&seg.path).map_err(|e| WalError::io("open segment", &seg.path, e))?;
    let mut reader = BufReader::new(file);
    reader
        .seek(SeekFrom::Start(checkpoint.pos_bytes))
        .map_err(|e| WalError::io("seek segment", &seg.path, e))?;
    let mut pos = checkpoint.pos_bytes;
    let mut expected = checkpoint.index;
    let mut max_ts_before_ms = checkpoint.max_ts_before_ms;
    let mut previous = None;
    let mut payload = Vec::new();
    loop {
        let frame = read_record(&mut reader, seg.size_bytes - pos, &mut payload)
            .map_err(|e| WalError::io("read segment", &seg.path, e))?;
        let header = match frame {
            Frame::Record(h) if h.index == expected => h,
            Frame::Record(h) => {
                return Err(corrupt(
                    seg,
                    pos,
                    CorruptReason::NonContiguous {
                        expected,
                        found: h.index,
                    },
                ));
            }
            Frame::End => return Err(corrupt(seg, pos, CorruptReason::ShortFrame)),
            Frame::Torn(reason) => return Err(corrupt(seg, pos, reason)),
        };
        if header.index == target {
            return Ok(Cut {
                pos_bytes: pos,
                previous,
                max_ts_before_ms,
            });
        }
        previous = Some((header, pos));
        max_ts_before_ms = max_ts_before_ms.max(header.ts_ms);
        pos += encoded_len_bytes(payload.len());
        expected += 1;
    }
}

fn corrupt(seg: &Segment, pos_bytes: u64, reason: CorruptReason) -> WalError {
    WalError::Corrupt {
        path: seg.path.clone(),
        pos_bytes,
        reason,
    }
}
