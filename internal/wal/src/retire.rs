//! Deleting large log files without stalling the disk's other writes.
//!
//! On a filesystem mounted with `discard`, freeing a file's blocks waits for
//! the device to discard them (about 90 ms for 64 MiB under load here), and
//! every fsync queued behind that waits as long. So a file is first renamed
//! out of its log ([`retire`]; no log's listing takes a `.retired` name for
//! one of its files), the caller makes the renames durable with one directory
//! fsync, and then [`erase`] frees the blocks a step at a time before
//! unlinking: an fsync waits for one step at most. A crash between the two
//! leaves a retired file, which opening the log erases
//! ([`erase_leftovers`]).
//!
//! Why rename first: a log cuts itself at the first torn record it finds and
//! drops every later file, so a file shortened in place and found after a
//! crash would cost everything written after it.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

/// The suffix a retired file's name gets.
pub const RETIRED_SUFFIX: &str = ".retired";

/// Blocks freed per truncation: an fsync waits behind one step's discard at
/// most (~1.5 ms here under load).
const STEP_BYTES: u64 = 1 << 20;

/// Renames `path` to its retired name and returns that name. Durable only
/// after the directory is fsynced.
pub fn retire(path: &Path) -> io::Result<PathBuf> {
    let mut name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_os_string();
    name.push(RETIRED_SUFFIX);
    let retired = path.with_file_name(name);
    std::fs::rename(path, &retired)?;
    Ok(retired)
}

/// True when `path` names a retired file.
pub fn is_retired(path: &Path) -> bool {
    path.to_string_lossy().ends_with(RETIRED_SUFFIX)
}

/// Frees a retired file's blocks a step at a time from its end, then unlinks
/// it. A file already gone is not an error.
pub fn erase(retired: &Path) -> io::Result<()> {
    // Shortening a live log file would lose what it holds.
    assert!(
        is_retired(retired),
        "erasing {} which is not retired",
        retired.display()
    );
    let file = match OpenOptions::new().write(true).open(retired) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut len = file.metadata()?.len();
    while len > 0 {
        len = len.saturating_sub(STEP_BYTES);
        file.set_len(len)?;
    }
    drop(file);
    match std::fs::remove_file(retired) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Erases `retired` files whose renames are durable. They are no longer
/// part of any log: a failure only leaves a file for the next open to erase,
/// so it is logged, not returned.
pub fn erase_all(retired: Vec<PathBuf>) {
    for path in retired {
        if let Err(e) = erase(&path) {
            tracing::warn!(path = %path.display(), error = %e, "erasing a retired log file failed");
        }
    }
}

/// Erases every retired file in `dir` (left by a crash before its erase);
/// returns how many.
pub fn erase_leftovers(dir: &Path) -> io::Result<usize> {
    let mut erased = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if is_retired(&path) {
            erase(&path)?;
            erased += 1;
        }
    }
    Ok(erased)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_file_is_renamed_then_erased() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000001.wal");
        std::fs::write(&path, vec![7u8; 3 * STEP_BYTES as usize + 5]).unwrap();
        let retired = retire(&path).unwrap();
        assert!(!path.exists(), "the log's name is free once retired");
        assert_eq!(
            retired.file_name().unwrap(),
            "00000000000000000001.wal.retired"
        );
        assert_eq!(
            std::fs::metadata(&retired).unwrap().len(),
            3 * STEP_BYTES + 5
        );
        erase(&retired).unwrap();
        assert!(!retired.exists());
        erase(&retired).expect("erasing a file already gone is not an error");
    }

    #[test]
    #[should_panic(expected = "not retired")]
    fn a_file_still_in_a_log_is_never_erased() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("00000000000000000001.wal");
        std::fs::write(&live, b"live").unwrap();
        let _ = erase(&live);
    }

    #[test]
    fn leftovers_are_erased_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("0000000000000002.rlog");
        std::fs::write(&keep, b"live").unwrap();
        std::fs::write(dir.path().join("0000000000000001.rlog.retired"), b"dead").unwrap();
        std::fs::write(dir.path().join("00000000000000000009.wal.retired"), b"").unwrap();
        assert_eq!(erase_leftovers(dir.path()).unwrap(), 2);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![keep.file_name().unwrap().to_os_string()]);
    }
}
