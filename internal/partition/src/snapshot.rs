//! Where a partition's state snapshots live on disk.
//!
//! A snapshot is a RocksDB checkpoint directory `snapshots/snap-<ms>-<n>/`
//! (hard-linked SST files: cheap to take) plus `snapshots/current.json` naming the
//! newest complete one with its Raft meta. Only the newest is kept. For sending
//! to another node a snapshot is packed into one file: for each file of the
//! checkpoint, `[name len u16 LE][name][size u64 LE][bytes]`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::log_store::write_atomic;
use crate::types::SnapshotMeta;

const CURRENT: &str = "current.json";

#[derive(Clone)]
pub struct SnapshotDir {
    root: PathBuf,
    counter: Arc<AtomicU64>,
}

#[derive(Serialize, Deserialize)]
struct Current {
    meta: SnapshotMeta,
    dir: String,
}

impl SnapshotDir {
    /// Opens `root`, removing leftovers of snapshots that never completed.
    pub fn open(root: PathBuf) -> io::Result<SnapshotDir> {
        std::fs::create_dir_all(&root)?;
        let me = SnapshotDir {
            root,
            counter: Arc::new(AtomicU64::new(0)),
        };
        let keep = me.read_current()?.map(|c| c.dir);
        me.remove_others(keep.as_deref())?;
        Ok(me)
    }

    fn read_current(&self) -> io::Result<Option<Current>> {
        match std::fs::read(self.root.join(CURRENT)) {
            Ok(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes every snapshot directory and packed file except `keep`.
    fn remove_others(&self, keep: Option<&str>) -> io::Result<()> {
        for item in std::fs::read_dir(&self.root)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name == CURRENT || Some(name.as_str()) == keep {
                continue;
            }
            let path = item.path();
            if item.file_type()?.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// A fresh, not yet existing directory for a checkpoint.
    pub fn new_checkpoint_dir(&self) -> PathBuf {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.root.join(format!("snap-{ms}-{n}"))
    }

    pub fn id_of(dir: &Path) -> String {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Makes the checkpoint at `dir` the current snapshot and drops older ones.
    pub fn commit(&self, dir: &Path, meta: &SnapshotMeta) -> io::Result<()> {
        let current = Current {
            meta: meta.clone(),
            dir: Self::id_of(dir),
        };
        write_atomic(
            &self.root.join(CURRENT),
            &serde_json::to_vec(&current).map_err(io::Error::other)?,
        )?;
        self.remove_others(Some(&current.dir))
    }

    pub fn current_meta(&self) -> io::Result<Option<SnapshotMeta>> {
        Ok(self.read_current()?.map(|c| c.meta))
    }

    /// The current snapshot's descriptor file, as a handle openraft can hold.
    pub async fn meta_file(&self) -> io::Result<tokio::fs::File> {
        tokio::fs::File::open(self.root.join(CURRENT)).await
    }

    /// A new empty file to receive a snapshot from the leader into.
    pub async fn incoming_file(&self) -> io::Result<tokio::fs::File> {
        let path = self.root.join(format!(
            "incoming-{}",
            self.counter.fetch_add(1, Ordering::Relaxed)
        ));
        tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .await
    }

    /// Packs the current checkpoint into one file and opens it for reading.
    pub async fn pack_current(&self, meta: &SnapshotMeta) -> io::Result<tokio::fs::File> {
        let src = self.root.join(&meta.snapshot_id);
        let dst = self.root.join(format!("packed-{}", meta.snapshot_id));
        let dst2 = dst.clone();
        tokio::task::spawn_blocking(move || pack(&src, &dst2))
            .await
            .map_err(io::Error::other)??;
        tokio::fs::File::open(dst).await
    }
}

/// Writes every regular file of `src` into the single file `dst`.
pub fn pack(src: &Path, dst: &Path) -> io::Result<()> {
    let mut out = io::BufWriter::new(std::fs::File::create(dst)?);
    let mut names: Vec<_> = std::fs::read_dir(src)?.collect::<io::Result<Vec<_>>>()?;
    names.sort_by_key(|e| e.file_name());
    for item in names {
        if !item.file_type()?.is_file() {
            continue;
        }
        let name = item.file_name().to_string_lossy().into_owned();
        let len = u16::try_from(name.len()).map_err(io::Error::other)?;
        let mut file = std::fs::File::open(item.path())?;
        let size = file.metadata()?.len();
        out.write_all(&len.to_le_bytes())?;
        out.write_all(name.as_bytes())?;
        out.write_all(&size.to_le_bytes())?;
        let copied = io::copy(&mut (&mut file).take(size), &mut out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name} shrank while packing"),
            ));
        }
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Restores the files packed by [`pack`] into the new directory `dst`.
/// Used when a follower installs a snapshot (cluster replication); tested here.
#[allow(dead_code)]
pub fn unpack(src: &Path, dst: &Path) -> io::Result<()> {
    std::fs::create_dir(dst)?;
    let mut input = io::BufReader::new(std::fs::File::open(src)?);
    loop {
        let mut len = [0u8; 2];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut name = vec![0u8; u16::from_le_bytes(len) as usize];
        input.read_exact(&mut name)?;
        let name = String::from_utf8(name).map_err(io::Error::other)?;
        if name.contains('/') || name == ".." || name == "." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad file name {name:?} in snapshot"),
            ));
        }
        let mut size = [0u8; 8];
        input.read_exact(&mut size)?;
        let size = u64::from_le_bytes(size);
        let mut out = std::fs::File::create(dst.join(&name))?;
        if io::copy(&mut (&mut input).take(size), &mut out)? != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("snapshot file {name} truncated"),
            ));
        }
        out.sync_all()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("a.sst"), vec![7u8; 100_000]).unwrap();
        std::fs::write(src.join("CURRENT"), b"MANIFEST-1\n").unwrap();
        let packed = dir.path().join("packed");
        pack(&src, &packed).unwrap();
        let dst = dir.path().join("dst");
        unpack(&packed, &dst).unwrap();
        assert_eq!(
            std::fs::read(dst.join("a.sst")).unwrap(),
            vec![7u8; 100_000]
        );
        assert_eq!(std::fs::read(dst.join("CURRENT")).unwrap(), b"MANIFEST-1\n");
    }

    #[test]
    fn truncated_pack_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("a"), vec![1u8; 1000]).unwrap();
        let packed = dir.path().join("packed");
        pack(&src, &packed).unwrap();
        let raw = std::fs::read(&packed).unwrap();
        std::fs::write(&packed, &raw[..raw.len() - 10]).unwrap();
        assert!(unpack(&packed, &dir.path().join("dst")).is_err());
    }
}
