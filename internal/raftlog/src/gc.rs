//! Garbage collection: old files are deleted as a prefix once no partition
//! has a live entry in them. While the log holds too many files, the live
//! entries still pinning the oldest ones are first copied (Rewrite records)
//! into the active file so those files can go.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chronos_wal::retire;

use crate::codec::{self, Kind};
use crate::error::RaftLogError;
use crate::files;
use crate::log::{Counters, Inner, LogFile, RaftLog};
use crate::memtable::Loc;
use crate::options::GcReport;

/// Rewrites are written in chunks of about this many bytes (or `file_bytes`
/// if smaller) so one lagging partition does not build a giant buffer.
const REWRITE_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

impl RaftLog {
    /// Deletes files no partition needs. When the log holds more than
    /// `max_files_before_rewrite` files, first rewrites the live entries
    /// sitting in the older ones into the active file. Called periodically
    /// by the node.
    pub fn gc(&self) -> Result<GcReport, RaftLogError> {
        let shared = &self.shared;
        let mut report = GcReport::default();
        let synced_before = {
            let mut inner = shared.inner.lock();
            inner.check_writable()?;
            let keep = shared.opts.max_files_before_rewrite;
            if inner.files.len() > keep {
                // Files older than the newest `keep` give up their entries.
                let cutoff = *inner
                    .files
                    .keys()
                    .rev()
                    .nth(keep - 1)
                    .unwrap_or(&inner.active);
                let file_bytes = shared.opts.file_bytes;
                report.entries_rewritten =
                    rewrite_older_than(&mut inner, &shared.dir, cutoff, file_bytes)?;
                Counters::add(&shared.counters.entries_rewritten, report.entries_rewritten);
            }
            inner.active
        };
        // Makes the rewrites, and the checkpoint of every file up to the
        // active one, durable before anything they replace is deleted.
        self.sync()?;
        let mut inner = shared.inner.lock();
        let min_live = inner.parts.values().filter_map(|s| s.min_file()).min();
        // A file may go only if the file after it existed at that sync, so
        // its checkpoint of votes and purge points is on disk.
        let limit = min_live
            .unwrap_or(u64::MAX)
            .min(synced_before)
            .min(inner.active);
        let kept = inner.files.split_off(&limit);
        let doomed: BTreeMap<u64, LogFile> = std::mem::replace(&mut inner.files, kept);
        // Removed outside the writer lock (no partition reads these files any
        // more), and renamed out of the log before their blocks are freed a
        // step at a time: freeing waits for the disk's discard (about 90 ms
        // for 64 MiB here), and every fsync waited with it.
        drop(inner);
        let mut retired = Vec::with_capacity(doomed.len());
        for (seq, f) in doomed {
            let path = retire::retire(&files::file_path(&shared.dir, seq))
                .map_err(RaftLogError::io("retire file"))?;
            retired.push(path);
            report.files_removed += 1;
            report.bytes_removed += f.len;
        }
        if report.files_removed > 0 {
            files::sync_dir(&shared.dir)?;
            Counters::add(&shared.counters.files_removed, report.files_removed);
            tracing::debug!(?report, "raft log gc");
        }
        retire::erase_all(retired);
        Ok(report)
    }
}

/// Copies every live entry located in a file older than `cutoff` to the end
/// of the log as a Rewrite record and points the index at the copy.
fn rewrite_older_than(
    inner: &mut Inner,
    dir: &Path,
    cutoff: u64,
    file_bytes: u64,
) -> Result<u64, RaftLogError> {
    let chunk_bytes = REWRITE_CHUNK_BYTES.min(file_bytes);
    let mut partitions: Vec<u32> = inner.parts.keys().copied().collect();
    partitions.sort_unstable();
    let mut rewritten = 0;
    for p in partitions {
        let old: Vec<(u64, Loc)> = match inner.parts.get(&p) {
            Some(s) => (s.first..)
                .zip(s.locs.iter().copied())
                .filter(|(_, loc)| loc.file_seq < cutoff)
                .collect(),
            None => continue,
        };
        for run in chunks(&old, chunk_bytes) {
            rewrite_run(inner, dir, file_bytes, p, run)?;
            rewritten += run.len() as u64;
        }
    }
    Ok(rewritten)
}

/// Splits `old` into runs of about `chunk_bytes` of records each.
fn chunks(old: &[(u64, Loc)], chunk_bytes: u64) -> Vec<&[(u64, Loc)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, (_, loc)) in old.iter().enumerate() {
        bytes += u64::from(loc.len);
        if bytes >= chunk_bytes {
            out.push(&old[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < old.len() {
        out.push(&old[start..]);
    }
    out
}

fn rewrite_run(
    inner: &mut Inner,
    dir: &Path,
    file_bytes: u64,
    partition: u32,
    run: &[(u64, Loc)],
) -> Result<(), RaftLogError> {
    let mut buf = Vec::new();
    let mut placed = Vec::with_capacity(run.len());
    for (index, loc) in run {
        let file = Arc::clone(&inner.files[&loc.file_seq].file);
        let payload = files::read_entry(&file, *loc, partition, *index)?;
        placed.push(codec::encode(
            &mut buf,
            Kind::Rewrite,
            partition,
            *index,
            &payload,
        ));
    }
    let (file_seq, base) = inner.write_records(dir, file_bytes, &buf)?;
    let state = inner
        .parts
        .get_mut(&partition)
        .ok_or(RaftLogError::Closed)?;
    for ((index, _), (offset, len)) in run.iter().zip(placed) {
        let at = index - state.first;
        // The writer lock was held since `run` was listed: still live, same slot.
        assert!((at as usize) < state.locs.len(), "rewritten entry vanished");
        state.locs[at as usize] = Loc {
            file_seq,
            offset: base + offset,
            len,
        };
    }
    Ok(())
}
