//! Opening a WAL directory: find the segments, trust sealed `.idx` files that
//! agree with their segment, scan the rest, and cut the log back to its
//! longest valid prefix.
//!
//! **Invariant established here: the kept segments are contiguous, every one
//! but the last holds at least one record, and every byte of every kept
//! segment is a valid record.** Damage anywhere (normally a torn write at the
//! tail of the last segment) truncates the log at the first bad record and
//! drops every later segment, each with a `tracing::warn!`.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::error::WalError;
use crate::options::{RecoveryReport, WalOptions};
use crate::segment::{
    classify, fsync_dir, idx_path, load_sealed, open_for_write, remove_if_exists, scan_segment,
    segment_path, write_sealed_index, FileKind, Scan, Segment,
};

/// The state of the log as found on disk.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    /// Upper bound on every record's `ts_ms`.
    pub max_ts_ms: u64,
    pub report: RecoveryReport,
}

pub(crate) fn recover(dir: &Path, opts: &WalOptions) -> Result<Recovered, WalError> {
    fs::create_dir_all(dir).map_err(|e| WalError::io("create directory", dir, e))?;
    // Segments retention renamed away but had not erased when the process stopped.
    crate::retire::erase_leftovers(dir).map_err(|e| WalError::io("erase retired files", dir, e))?;
    let firsts = list_segments(dir)?;
    let mut out = Recovered::default();
    let mut broken = false;
    for (i, &first) in firsts.iter().enumerate() {
        if broken {
            drop_segment(dir, first, &mut out.report, "follows a damaged segment")?;
            continue;
        }
        if let Some(prev) = out.segments.last() {
            if first != prev.next_index() {
                tracing::warn!(
                    expected = prev.next_index(),
                    found = first,
                    "segment does not continue the log"
                );
                drop_segment(dir, first, &mut out.report, "not contiguous")?;
                broken = true;
                continue;
            }
        }
        let is_last = i + 1 == firsts.len();
        match load_one(dir, first, is_last, out.max_ts_ms, opts, &mut out.report)? {
            Loaded::Segment { segment, intact } => {
                out.max_ts_ms = segment.running_max_ts_after(out.max_ts_ms);
                out.segments.push(segment);
                broken = !intact;
            }
            Loaded::Unusable => {
                drop_segment(
                    dir,
                    first,
                    &mut out.report,
                    "garbage or empty sealed segment",
                )?;
                broken = true;
            }
        }
    }
    if let Some(active) = out.segments.last() {
        // The active segment is described by scanning, never by a cached index.
        remove_if_exists(&idx_path(dir, active.first_index))?;
    }
    fsync_dir(dir)?;
    Ok(out)
}

enum Loaded {
    /// `intact` is false when the segment's tail had to be cut.
    Segment { segment: Segment, intact: bool },
    /// Garbage header, or a sealed segment with no valid record.
    Unusable,
}

fn load_one(
    dir: &Path,
    first: u64,
    is_last: bool,
    max_ts_before_ms: u64,
    opts: &WalOptions,
    report: &mut RecoveryReport,
) -> Result<Loaded, WalError> {
    if !is_last {
        if let Some(segment) = load_sealed(dir, first) {
            return Ok(Loaded::Segment {
                segment,
                intact: true,
            });
        }
    }
    let path = segment_path(dir, first);
    let (segment, file_len, torn) = match scan_segment(
        dir,
        first,
        max_ts_before_ms,
        opts.index_interval_bytes,
    )? {
        Scan::UnsupportedVersion(version) => {
            return Err(WalError::UnsupportedVersion { path, version })
        }
        Scan::Garbage { file_len } => {
            tracing::warn!(path = %path.display(), file_len, "segment header is missing or invalid");
            return Ok(Loaded::Unusable);
        }
        Scan::Valid {
            segment,
            file_len,
            torn,
        } => (segment, file_len, torn),
    };
    if !is_last && !segment.has_records() {
        return Ok(Loaded::Unusable);
    }
    let intact = file_len == segment.size_bytes;
    if !intact {
        let reason = torn.map(|r| r.to_string()).unwrap_or_default();
        tracing::warn!(
            path = %path.display(),
            valid_bytes = segment.size_bytes,
            dropped_bytes = file_len - segment.size_bytes,
            reason,
            "truncating torn segment tail"
        );
        let file = open_for_write(&path)?;
        file.set_len(segment.size_bytes)
            .and_then(|()| file.sync_data())
            .map_err(|e| WalError::io("truncate torn tail", &path, e))?;
        report.dropped_bytes += file_len - segment.size_bytes;
    } else if !is_last {
        write_sealed_index(dir, &segment)?;
        report.rebuilt_indexes += 1;
    }
    Ok(Loaded::Segment { segment, intact })
}

/// Sorted first indices of the segment files; removes leftover temp files and
/// `.idx` files whose segment is gone.
fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut segments = BTreeSet::new();
    let mut indexes = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| WalError::io("list directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io("list directory", dir, e))?;
        let name = entry.file_name();
        let Some(kind) = name.to_str().and_then(classify) else {
            continue;
        };
        match kind {
            FileKind::Segment(first) => {
                segments.insert(first);
            }
            FileKind::Index(first) => indexes.push(first),
            FileKind::TempIndex => remove_if_exists(&entry.path())?,
        }
    }
    for first in indexes {
        if !segments.contains(&first) {
            remove_if_exists(&idx_path(dir, first))?;
        }
    }
    Ok(segments.into_iter().collect())
}

fn drop_segment(
    dir: &Path,
    first: u64,
    report: &mut RecoveryReport,
    why: &'static str,
) -> Result<(), WalError> {
    let path = segment_path(dir, first);
    let size_bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    tracing::warn!(path = %path.display(), size_bytes, why, "dropping segment");
    remove_if_exists(&path)?;
    remove_if_exists(&idx_path(dir, first))?;
    report.dropped_bytes += size_bytes;
    report.dropped_segments.push(path);
    Ok(())
}
