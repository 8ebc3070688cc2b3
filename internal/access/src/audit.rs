//! The audit log: one JSON line per state-changing action or denial,
//! appended to a file that rotates by size.
//!
//! Each line is written with one `write` on a file opened for appending and
//! is not buffered, so it is in the OS as soon as `record` returns (but not
//! fsynced: an audit line is not worth a disk flush on the publish path).
//! **Recording never fails and never panics**: the action being audited has
//! already happened or been refused; an I/O error is counted, logged once
//! per run of errors, and the file reopened on the next line.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// `[audit]`: where the log goes and how much of it is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The current file; rotated ones are `<path>.1` (newest) … `<path>.<keep>`.
    pub path: PathBuf,
    /// Size at which the current file is rotated.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept besides the current one (0: none).
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_max_bytes() -> u64 {
    64 << 20
}

fn default_keep() -> u32 {
    5
}

impl AuditConfig {
    /// `path` with the default size and number of files.
    pub fn new(path: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig {
            path: path.into(),
            max_bytes: default_max_bytes(),
            keep: default_keep(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit.max_bytes must be at least 1")]
    ZeroMaxBytes,
    #[error("opening audit log {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
}

/// What happened, as one line of the log records it (the time is added
/// when it is written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Who asked (`?` when they could not be authenticated).
    pub principal: String,
    /// snake_case, e.g. `seek_group`, `publish`, `authenticate`.
    pub action: String,
    /// e.g. `topic=orders group=g1`, `cluster`.
    pub target: String,
    /// `ok`, `denied` or `error`.
    pub result: String,
    pub detail: Option<String>,
    /// The node that wrote the line.
    pub node: u64,
}

/// The line's shape; field order is the order in the file.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    principal: &'a str,
    action: &'a str,
    target: &'a str,
    result: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    node: u64,
}

/// The audit log, or nothing. Cheap to clone; safe to share across threads.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    config: AuditConfig,
    writer: Mutex<Writer>,
    errors: AtomicU64,
}

#[derive(Debug)]
struct Writer {
    /// `None` after an error: reopened on the next line.
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    /// Errors since the last line that was written, to log a run of them once.
    failing: u64,
}

impl Audit {
    /// Opens (creating it and its directory if need be) the log at
    /// `config.path`, appending to what is there.
    pub fn open(config: AuditConfig) -> Result<Audit, AuditError> {
        if config.max_bytes == 0 {
            return Err(AuditError::ZeroMaxBytes);
        }
        let (file, size) = open_append(&config.path).map_err(|source| AuditError::Open {
            path: config.path.clone(),
            source,
        })?;
        Ok(Audit {
            inner: Some(Arc::new(Inner {
                config,
                writer: Mutex::new(Writer {
                    file: Some(file),
                    size,
                    failing: 0,
                }),
                errors: AtomicU64::new(0),
            })),
        })
    }

    /// Records nothing.
    pub fn disabled() -> Audit {
        Audit { inner: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The current file, for reading the log back.
    pub fn path(&self) -> Option<&Path> {
        self.inner.as_ref().map(|i| i.config.path.as_path())
    }

    /// Lines that could not be written since the log was opened.
    pub fn errors(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.errors.load(Ordering::Relaxed))
    }

    /// Appends one line for `rec`, stamped with the current time.
    pub fn record(&self, rec: &AuditRecord) {
        self.record_at(rec, SystemTime::now());
    }

    /// Appends one line for `rec`, stamped with `time`.
    pub fn record_at(&self, rec: &AuditRecord, time: SystemTime) {
        let Some(inner) = &self.inner else {
            return;
        };
        let line = Line {
            time: rfc3339_millis(time),
            principal: &rec.principal,
            action: &rec.action,
            target: &rec.target,
            result: &rec.result,
            detail: rec.detail.as_deref(),
            node: rec.node,
        };
        // Serializing strings and a number cannot fail; if it ever did, the
        // line is counted as lost like any other.
        let text = match serde_json::to_string(&line) {
            Ok(mut text) => {
                text.push('\n');
                text
            }
            Err(e) => {
                inner.failed(&mut inner.writer.lock(), "encoding a line", &e);
                return;
            }
        };
        let mut writer = inner.writer.lock();
        match inner.append(&mut writer, text.as_bytes()) {
            Ok(()) => {
                if writer.failing > 0 {
                    tracing::info!(
                        path = %inner.config.path.display(),
                        lost = writer.failing,
                        "audit log writable again"
                    );
                    writer.failing = 0;
                }
            }
            Err((what, e)) => inner.failed(&mut writer, what, &e),
        }
    }
}

impl Inner {
    fn append(&self, w: &mut Writer, line: &[u8]) -> Result<(), (&'static str, io::Error)> {
        let len = line.len() as u64;
        // A line longer than max_bytes still goes, alone in a fresh file.
        if w.size > 0 && w.size.saturating_add(len) > self.config.max_bytes {
            w.file = None;
            rotate(&self.config.path, self.config.keep).map_err(|e| ("rotating", e))?;
        }
        if w.file.is_none() {
            let (file, size) = open_append(&self.config.path).map_err(|e| ("opening", e))?;
            *w = Writer {
                file: Some(file),
                size,
                failing: w.failing,
            };
        }
        let Some(file) = w.file.as_mut() else {
            return Err(("opening", io::Error::other("no file")));
        };
        match file.write_all(line).and_then(|()| file.flush()) {
            Ok(()) => {
                w.size += len;
                Ok(())
            }
            Err(e) => {
                // The size is unknown after a partial write: reopen to learn it.
                w.file = None;
                Err(("writing", e))
            }
        }
    }

    fn failed(&self, w: &mut Writer, what: &str, e: &dyn std::error::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if w.failing == 0 {
            tracing::warn!(
                path = %self.config.path.display(),
                "audit log: {what}: {e} (lines are lost until it recovers)"
            );
        }
        w.failing += 1;
    }
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

/// `<path>.<n>`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Shifts `path` → `path.1` → … → `path.keep`, the oldest falling off.
fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    let ignore_missing = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    if keep == 0 {
        return ignore_missing(fs::remove_file(path));
    }
    // Renaming onto path.keep replaces (deletes) the oldest.
    for n in (1..keep).rev() {
        ignore_missing(fs::rename(numbered(path, n), numbered(path, n + 1)))?;
    }
    ignore_missing(fs::rename(path, numbered(path, 1)))
}

/// `2026-12-03T06:40:00.123Z`. Times outside 1970..=9999 (a broken clock)
/// are clamped, as the formatter only handles those.
fn rfc3339_millis(time: SystemTime) -> String {
    const LAST: Duration = Duration::from_secs(253_402_300_799); // 9999-12-31T23:59:59Z
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let clamped = UNIX_EPOCH + since_epoch.min(LAST);
    humantime::format_rfc3339_millis(clamped).to_string()
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
