//! Garbage collection: old files leave the log as a prefix once no partition
//! has a live entry in them (kept as spares, or deleted: `spare.rs`). While the log holds too many files, the live
//! entries still pinning the oldest ones are first copied (Rewrite records)
//! into the active file so those files can go.

use std::path::Path;

use crate::codec::{self, Kind};
use crate::error::RaftLogError;
use crate::files;
use crate::log::{Counters, Inner, RaftLog};
use crate::memtable::Loc;
use crate::options::GcReport;
use crate::spare;

/// Rewrites are written in chunks of about this many bytes (or `file_bytes`
/// if smaller) so one lagging partition does not build a giant buffer.
const REWRITE_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

impl RaftLog {
    /// Takes out the files no partition needs (kept as spares up to
    /// `spare_files`, the rest deleted). When the log holds more than
    /// `max_files_before_rewrite` files, first rewrites the live entries
    /// sitting in the older ones into the active file. Called periodically
    /// by the node.
    pub fn gc(&self) -> Result<GcReport, RaftLogError> {
        let shared = &self.shared;
        let mut report = GcReport::default();
        {
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
        }
        // Fsyncs the rewrites before anything they replace goes.
        let reclaimed = spare::reclaim(shared)?;
        Ok(GcReport {
            entries_rewritten: report.entries_rewritten,
            ..reclaimed
        })
    }
}

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
    let mut payloads = Vec::with_capacity(run.len());
    for (index, loc) in run {
        let f = &inner.files[&loc.file_seq];
        payloads.push(files::read_entry(
            &f.file, f.format, *loc, partition, *index,
        )?);
    }
    let bytes = payloads.iter().map(|p| codec::record_bytes(p.len())).sum();
    let stamp = inner.room(dir, file_bytes, bytes)?;
    let mut buf = Vec::with_capacity(bytes as usize);
    let placed: Vec<_> = run
        .iter()
        .zip(&payloads)
        .map(|((index, _), payload)| {
            codec::encode(&mut buf, stamp, Kind::Rewrite, partition, *index, payload)
        })
        .collect();
    let (file_seq, base) = inner.write_records(file_bytes, &buf)?;
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
