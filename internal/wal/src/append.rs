//! The write path: validate a batch, encode it, write it with one positioned
//! write per segment it touches (rolling segments as needed), and queue its
//! callback for the flusher.
//!
//! A failed write is rolled back (the file is cut back to the last good
//! record, in memory and on disk) so no later append builds on a torn record;
//! if the rollback itself fails, or a seal-time fsync fails, the WAL enters
//! the failed state.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::codec::{encode_record, encoded_len_bytes, RecordHeader, MAX_RECORD_BYTES};
use crate::error::WalError;
use crate::flusher::Pending;
use crate::maintenance::truncate_locked;
use crate::options::{DurableCallback, FsyncMode};
use crate::segment::{
    create_segment_file, fsync_dir, remove_if_exists, segment_path, write_sealed_index, Segment,
};
use crate::wal::{Inner, SegmentFile, Shared, Wal};

impl Wal {
    /// Appends `records` (one write per segment touched) and arranges for
    /// `on_durable` to be called once they are durable, as the fsync mode
    /// defines. If this returns `Err`, nothing of the batch is kept and
    /// `on_durable` is never called.
    ///
    /// `on_durable` runs on the flusher thread (or, in `Periodic` mode, on
    /// this thread before `append` returns); it should be quick and must not
    /// wait for another append's callback.
    pub fn append(
        &self,
        records: &[(RecordHeader, &[u8])],
        on_durable: DurableCallback,
    ) -> Result<(), WalError> {
        let shared = &*self.shared;
        let mut inner = shared.inner.lock();
        shared.check_writable(&inner)?;
        validate_batch(&inner, records)?;
        let written_bytes = match write_batch(shared, &mut inner, records) {
            Ok(bytes) => bytes,
            Err(e) => {
                roll_back(shared, &mut inner, records);
                return Err(e);
            }
        };
        inner.debug_check();
        shared.stats.appends_total.fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .bytes_written_total
            .fetch_add(written_bytes, Ordering::Relaxed);
        let inline = matches!(shared.opts.fsync, FsyncMode::Periodic { .. });
        let (queued, now) = if inline {
            (None, Some(on_durable))
        } else {
            (Some(on_durable), None)
        };
        let pending = Pending {
            file: inner.active.clone(),
            last_index: inner.last_header().map(|h| h.index),
            epoch: inner.epoch,
            bytes: written_bytes,
            enqueued_at: Instant::now(),
            callback: queued,
            force: false,
        };
        shared.queue.push(pending, shared.opts.fsync);
        drop(inner);
        if let Some(callback) = now {
            callback(Ok(()));
        }
        Ok(())
    }
}

/// Checks sizes, index contiguity and seq order before anything is written.
fn validate_batch(inner: &Inner, records: &[(RecordHeader, &[u8])]) -> Result<(), WalError> {
    let last = inner.last_header();
    let mut expected = last.map(|h| h.index + 1);
    let mut previous_seq = last.map(|h| h.seq);
    for (header, payload) in records {
        let len_bytes = payload.len() as u64;
        if len_bytes > MAX_RECORD_BYTES {
            return Err(WalError::RecordTooLarge {
                len_bytes,
                max_bytes: MAX_RECORD_BYTES,
            });
        }
        if header.index == u64::MAX {
            return Err(WalError::InvalidIndex {
                index: header.index,
            });
        }
        if let Some(expected) = expected {
            if header.index != expected {
                return Err(WalError::NonContiguous {
                    expected,
                    got: header.index,
                });
            }
        }
        if let Some(previous) = previous_seq {
            if header.seq < previous {
                return Err(WalError::SeqRegression {
                    previous,
                    got: header.seq,
                });
            }
        }
        expected = Some(header.index + 1);
        previous_seq = Some(header.seq);
    }
    Ok(())
}

/// Writes the batch, one chunk per segment; returns the bytes written.
fn write_batch(
    shared: &Shared,
    inner: &mut Inner,
    records: &[(RecordHeader, &[u8])],
) -> Result<u64, WalError> {
    let mut buf = std::mem::take(&mut inner.scratch);
    let result = write_chunks(shared, inner, records, &mut buf);
    const KEEP_SCRATCH_BYTES: usize = 8 * 1024 * 1024;
    if buf.capacity() <= KEEP_SCRATCH_BYTES {
        buf.clear();
        inner.scratch = buf;
    }
    result
}

fn write_chunks(
    shared: &Shared,
    inner: &mut Inner,
    records: &[(RecordHeader, &[u8])],
    buf: &mut Vec<u8>,
) -> Result<u64, WalError> {
    let segment_bytes = shared.opts.segment_bytes;
    let interval_bytes = shared.opts.index_interval_bytes;
    let mut written_bytes = 0;
    let mut i = 0;
    while i < records.len() {
        prepare_segment(shared, inner, &records[i])?;
        let Inner {
            segments,
            active,
            max_ts_ms,
            ..
        } = &mut *inner;
        let (Some(segment), Some(file)) = (segments.last_mut(), active.as_ref()) else {
            return Err(WalError::Failed);
        };
        let start = segment.size_bytes;
        let mut end = start;
        let mut j = i;
        buf.clear();
        // The first record always goes in: the segment is empty or it fits.
        while let Some((header, payload)) = records.get(j) {
            let len = encoded_len_bytes(payload.len());
            if j > i && end + len > segment_bytes {
                break;
            }
            encode_record(buf, header, payload);
            end += len;
            j += 1;
        }
        shared.write_at(file, buf, start)?;
        let mut pos = start;
        for (header, payload) in &records[i..j] {
            let len = encoded_len_bytes(payload.len());
            segment.note_record(pos, header, len, *max_ts_ms, interval_bytes);
            *max_ts_ms = (*max_ts_ms).max(header.ts_ms);
            pos += len;
        }
        debug_assert_eq!(pos, end);
        shared
            .stats
            .disk_bytes
            .fetch_add(end - start, Ordering::Relaxed);
        written_bytes += end - start;
        i = j;
    }
    Ok(written_bytes)
}

/// Makes sure the active segment can take `record`: creates the first
/// segment, renames an empty log's segment to the record's index, or rolls.
fn prepare_segment(
    shared: &Shared,
    inner: &mut Inner,
    record: &(RecordHeader, &[u8]),
) -> Result<(), WalError> {
    let index = record.0.index;
    let len = encoded_len_bytes(record.1.len());
    match inner.segments.last() {
        None => create_active(shared, inner, index),
        Some(seg) if !seg.has_records() && seg.first_index != index => {
            // The log is empty (validation would have rejected the index
            // otherwise), so the header-only segment just takes a new name.
            debug_assert_eq!(inner.segments.len(), 1);
            let old = seg.path.clone();
            inner.segments.clear();
            inner.active = None;
            remove_if_exists(&old)?;
            create_active(shared, inner, index)
        }
        Some(seg) if seg.has_records() && seg.size_bytes + len > shared.opts.segment_bytes => {
            roll(shared, inner, index)
        }
        Some(_) => Ok(()),
    }
}

/// Seals the active segment (fsync, then `.idx`) and starts a new one.
/// The fsync is what lets callbacks for the new segment's data imply the
/// old segment's data is durable.
fn roll(shared: &Shared, inner: &mut Inner, next_index: u64) -> Result<(), WalError> {
    let (Some(old_file), Some(old)) = (inner.active.clone(), inner.segments.last()) else {
        return Err(WalError::Failed);
    };
    if let Err(e) = shared.sync_file(&old_file) {
        shared.mark_failed(&e);
        return Err(e);
    }
    if let Err(e) = write_sealed_index(&shared.dir, old) {
        // Only a cache: open rebuilds it by scanning.
        tracing::warn!(error = %e, "could not write sparse index of sealed segment");
    }
    create_active(shared, inner, next_index)
}

pub(crate) fn create_active(
    shared: &Shared,
    inner: &mut Inner,
    first_index: u64,
) -> Result<(), WalError> {
    let path = segment_path(&shared.dir, first_index);
    let created = create_segment_file(&path).and_then(|file| fsync_dir(&shared.dir).map(|()| file));
    let file = match created {
        Ok(file) => file,
        Err(e) => {
            let _ = remove_if_exists(&path);
            return Err(e);
        }
    };
    inner
        .segments
        .push(Segment::empty(&shared.dir, first_index));
    inner.active = Some(Arc::new(SegmentFile { file, path }));
    shared.refresh_layout_stats(inner);
    Ok(())
}

/// Undoes whatever part of a failed batch reached the disk.
fn roll_back(shared: &Shared, inner: &mut Inner, records: &[(RecordHeader, &[u8])]) {
    if shared.failed.load(Ordering::Acquire) {
        return;
    }
    let result = (|| {
        // Bytes of the chunk whose write failed, beyond the last good record.
        if let (Some(file), Some(seg)) = (&inner.active, inner.segments.last()) {
            file.file
                .set_len(seg.size_bytes)
                .map_err(|e| WalError::io("cut failed write", &file.path, e))?;
        }
        // Chunks of this batch that were written to earlier segments.
        match records.first() {
            Some((first, _)) if inner.last_header().is_some_and(|h| h.index >= first.index) => {
                truncate_locked(shared, inner, first.index)
            }
            _ => Ok(()),
        }
    })();
    if let Err(e) = result {
        shared.mark_failed(&e);
    }
    shared.refresh_layout_stats(inner);
}
