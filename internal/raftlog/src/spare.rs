//! Reusing dead files. A file no partition needs any more is renamed
//! `{seq:016}.spare` and kept (up to `spare_files`) instead of deleted; the
//! next roll renames one back as the new log file and writes over it. Its
//! blocks are allocated and its pages usually still cached, so the file
//! needs no zero-filling and its fdatasyncs no journal commit, and no
//! delete (with `discard`, a slow one) happens at all.
//!
//! What makes writing over old records safe is the stamp (`codec.rs`): the
//! records of the earlier use that follow the current ones carry another
//! stamp and read as the end of the file, and a rolled file ends in a seal,
//! so recovery tells a finished file from one a crash cut short.
//!
//! A spare is written again only once no reader holds its handle (a read
//! takes the handle under the writer lock, so none can start once the file
//! left the index). Only files this build wrote (version 2) are kept.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chronos_wal::retire;

use crate::codec::{self, Format};
use crate::error::RaftLogError;
use crate::files;
use crate::log::{Counters, Inner, Shared};
use crate::options::GcReport;

const EXTENSION: &str = "spare";

/// A dead file waiting to be written again.
pub(crate) struct Spare {
    path: PathBuf,
    file: Arc<File>,
    /// Its size: allocated blocks a new use writes over.
    bytes: u64,
}

fn spare_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.{EXTENSION}"))
}

/// The spares a previous run left in `dir`, at most `capacity`; the rest, and
/// any not of the current format, are deleted.
pub(crate) fn adopt(dir: &Path, capacity: usize) -> Result<Vec<Spare>, RaftLogError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(RaftLogError::io("list dir"))? {
        let path = entry.map_err(RaftLogError::io("list dir"))?.path();
        if path.extension().is_some_and(|x| x == EXTENSION) {
            found.push(path);
        }
    }
    found.sort();
    let mut spares = Vec::new();
    for path in found {
        let usable = spares.len() < capacity && is_current_format(&path)?;
        if !usable {
            std::fs::remove_file(&path).map_err(RaftLogError::io("remove spare file"))?;
            continue;
        }
        let file = files::open_rw(&path)?;
        let bytes = file
            .metadata()
            .map_err(RaftLogError::io("stat spare file"))?
            .len();
        spares.push(Spare {
            path,
            file: Arc::new(file),
            bytes,
        });
    }
    Ok(spares)
}

fn is_current_format(path: &Path) -> Result<bool, RaftLogError> {
    let mut header = Vec::with_capacity(codec::FILE_HEADER_BYTES as usize);
    File::open(path)
        .and_then(|f| f.take(codec::FILE_HEADER_BYTES).read_to_end(&mut header))
        .map_err(RaftLogError::io("read spare header"))?;
    Ok(matches!(
        codec::read_header(0, &header),
        Some((Format::V2 { .. }, _))
    ))
}

impl Inner {
    /// A spare renamed to `path`, with its size, if one is free of readers.
    pub(crate) fn take_spare(&mut self, path: &Path) -> Option<(Arc<File>, u64)> {
        let at = self
            .spares
            .iter()
            .position(|s| Arc::strong_count(&s.file) == 1)?;
        let spare = self.spares.swap_remove(at);
        match std::fs::rename(&spare.path, path) {
            Ok(()) => Some((spare.file, spare.bytes)),
            Err(e) => {
                // It stays on disk as a spare; the next open adopts or deletes it.
                tracing::warn!(error = %e, file = %spare.path.display(), "raft log: reusing a spare file failed");
                None
            }
        }
    }
}

/// Takes the files no partition has a live entry in out of the log: kept as
/// spares while there is room, deleted otherwise. Which files are dead is
/// decided before an fsync and acted on after it, so every record that made
/// them dead (purges, gc's rewrites), and the checkpoint of every later
/// file, is durable before they go: a purge still in the page cache must not
/// let its entries' file be reused.
pub(crate) fn reclaim(shared: &Shared) -> Result<GcReport, RaftLogError> {
    let _one_at_a_time = shared.reclaiming.lock();
    let limit = {
        let inner = shared.inner.lock();
        let min_live = inner.parts.values().filter_map(|s| s.min_file()).min();
        min_live.unwrap_or(u64::MAX).min(inner.active)
    };
    shared.sync()?;
    let mut report = GcReport::default();
    let (doomed, room) = {
        let mut inner = shared.inner.lock();
        // Files only ever die: what was dead before the sync still is.
        let kept = inner.files.split_off(&limit);
        let doomed = std::mem::replace(&mut inner.files, kept);
        let room = shared.opts.spare_files.saturating_sub(inner.spares.len());
        (doomed, room)
    };
    let dir = &shared.dir;
    let mut spares = Vec::new();
    let mut retired = Vec::new();
    for (seq, f) in doomed {
        let path = files::file_path(dir, seq);
        if spares.len() < room && matches!(f.format, Format::V2 { .. }) {
            let to = spare_path(dir, seq);
            // Not made durable: if a crash undoes it, the file is an old
            // dead one again, which recovery replays harmlessly.
            match std::fs::rename(&path, &to) {
                Ok(()) => {
                    spares.push(Spare {
                        path: to,
                        bytes: f.allocated.max(f.len),
                        file: f.file,
                    });
                    report.files_kept += 1;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, file = %path.display(), "raft log: keeping a spare failed");
                }
            }
        }
        retired.push(retire::retire(&path).map_err(RaftLogError::io("retire file"))?);
        report.files_removed += 1;
        report.bytes_removed += f.len;
    }
    if !spares.is_empty() {
        let mut inner = shared.inner.lock();
        inner.spares.extend(spares);
        assert!(
            inner.spares.len() <= shared.opts.spare_files,
            "more spares than spare_files"
        );
    }
    if report.files_removed > 0 {
        files::sync_dir(dir)?;
        Counters::add(&shared.counters.files_removed, report.files_removed);
    }
    if report.files_removed + report.files_kept > 0 {
        tracing::debug!(?report, "raft log: dead files reclaimed");
    }
    retire::erase_all(retired);
    Ok(report)
}
