//! Where a partition's state snapshots live on disk.
//!
//! A snapshot is a RocksDB checkpoint directory `snapshots/snap-<ms>-<n>/`
//! (hard-linked SST files: cheap to take) plus `snapshots/current.json` naming the
//! newest complete one with its Raft meta. Only the newest is kept.
//!
//! The `SnapshotData` openraft holds is the descriptor file, not the data: a
//! node that must ship its state to a follower streams the checkpoint directory
//! the descriptor names (that transport comes with cluster replication).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
        let ms = crate::wall_ms();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_keeps_only_the_newest_and_open_cleans_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path().join("s")).unwrap();
        assert!(snaps.current_meta().unwrap().is_none());

        let first = snaps.new_checkpoint_dir();
        std::fs::create_dir(&first).unwrap();
        let meta = SnapshotMeta {
            snapshot_id: SnapshotDir::id_of(&first),
            ..Default::default()
        };
        snaps.commit(&first, &meta).unwrap();
        let second = snaps.new_checkpoint_dir();
        std::fs::create_dir(&second).unwrap();
        let meta2 = SnapshotMeta {
            snapshot_id: SnapshotDir::id_of(&second),
            ..Default::default()
        };
        snaps.commit(&second, &meta2).unwrap();
        assert!(!first.exists(), "older snapshot removed");
        assert_eq!(
            snaps.current_meta().unwrap().unwrap().snapshot_id,
            meta2.snapshot_id
        );

        // A checkpoint that never got committed (crash mid-build) is cleaned up.
        let orphan = snaps.new_checkpoint_dir();
        std::fs::create_dir(&orphan).unwrap();
        let reopened = SnapshotDir::open(dir.path().join("s")).unwrap();
        assert!(!orphan.exists());
        assert!(second.exists());
        assert_eq!(
            reopened.current_meta().unwrap().unwrap().snapshot_id,
            meta2.snapshot_id
        );
    }
}
