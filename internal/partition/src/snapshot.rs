//! Where a partition's state snapshots live on disk, and their packed form.
//!
//! A snapshot is a RocksDB checkpoint directory `snapshots/snap-<ms>-<n>/`
//! (hard-linked SST files: cheap to take) plus `snapshots/current.json` naming the
//! newest complete one with its Raft meta. Only the newest is kept.
//!
//! To ship a snapshot, openraft needs one file it can read in chunks: the
//! checkpoint packed (`pack.rs`) into `snap-<ms>-<n>.pack` beside it, written
//! once (by the builder when the Raft group has other members, else when openraft
//! first asks to ship it) and removed with its checkpoint. A follower receives the chunks into an
//! `incoming-<n>` file, unpacks it into a new checkpoint directory and keeps
//! the received file as that checkpoint's pack.
//!
//! Installing a received snapshot replaces the live state (see
//! `state_machine/install.rs`); `installing.json` names the unpacked checkpoint
//! while that is in progress, so a crash midway is finished on the next open.
//!
//! Does not own: what a snapshot contains (the store), when one is taken or
//! sent (openraft), or the transport.

mod pack;

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};

use crate::log_store::{read_json, write_atomic};
use crate::types::SnapshotMeta;

pub use pack::{unpack, PackStats};

const CURRENT: &str = "current.json";
const INSTALLING: &str = "installing.json";
const INCOMING: &str = "incoming-";
const PACK_SUFFIX: &str = ".pack";
const TMP_SUFFIX: &str = ".tmp";

#[derive(Clone)]
pub struct SnapshotDir {
    root: PathBuf,
    counter: Arc<AtomicU64>,
    /// Names being written right now (a checkpoint being taken or unpacked, a
    /// pack being written): never removed as leftovers.
    busy: Arc<Mutex<HashSet<String>>>,
    /// Serialises changes of `current.json` and the removals that follow.
    layout: Arc<Mutex<()>>,
    /// Serialises packing, so each pack is written once.
    packing: Arc<Mutex<()>>,
    /// Held while a checkpoint of the live store is taken and while the live
    /// store is being replaced, so no checkpoint sees a half-installed state.
    live: Arc<Mutex<()>>,
}

/// `current.json` and `installing.json`: a checkpoint directory and its meta.
#[derive(Serialize, Deserialize)]
struct Named {
    meta: SnapshotMeta,
    dir: String,
}

fn read_named(path: &Path) -> io::Result<Option<Named>> {
    read_json(path)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Keeps a name in `snapshots/` from being removed as a leftover until dropped.
pub struct Busy {
    busy: Arc<Mutex<HashSet<String>>>,
    name: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.busy.lock().remove(&self.name);
    }
}

impl SnapshotDir {
    /// Opens `root`, removing leftovers of snapshots that never completed
    /// (and of transfers that never finished). Keeps the checkpoint an
    /// interrupted install names: the state machine finishes that install.
    pub fn open(root: PathBuf) -> io::Result<SnapshotDir> {
        std::fs::create_dir_all(&root)?;
        let me = SnapshotDir {
            root,
            counter: Arc::new(AtomicU64::new(0)),
            busy: Arc::default(),
            layout: Arc::default(),
            packing: Arc::default(),
            live: Arc::default(),
        };
        let mut keep = Vec::new();
        if let Some(current) = read_named(&me.root.join(CURRENT))? {
            keep.push(current.dir);
        }
        if let Some(installing) = read_named(&me.root.join(INSTALLING))? {
            keep.push(installing.dir);
        }
        me.remove_others(&keep, true)?;
        Ok(me)
    }

    /// Deletes every snapshot directory and file except the checkpoints in
    /// `keep` (with their packs), busy names and, unless `incoming_too`, files
    /// still being received.
    fn remove_others(&self, keep: &[String], incoming_too: bool) -> io::Result<()> {
        for item in std::fs::read_dir(&self.root)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            let kept = keep
                .iter()
                .any(|k| name == *k || name.strip_suffix(PACK_SUFFIX) == Some(k.as_str()));
            if kept
                || name == CURRENT
                || name == INSTALLING
                || (name.starts_with(INCOMING) && !incoming_too)
                || self.busy.lock().contains(&name)
            {
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

    fn mark_busy(&self, name: String) -> Busy {
        self.busy.lock().insert(name.clone());
        Busy {
            busy: self.busy.clone(),
            name,
        }
    }

    /// A fresh, not yet existing directory for a checkpoint, protected from
    /// cleanup until the returned guard drops (commit it before that).
    pub fn new_checkpoint_dir(&self) -> (PathBuf, Busy) {
        let ms = crate::wall_ms();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("snap-{ms}-{n}");
        (self.root.join(&name), self.mark_busy(name))
    }

    pub fn id_of(dir: &Path) -> String {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Held while checkpointing or replacing the live store.
    pub fn lock_live(&self) -> MutexGuard<'_, ()> {
        self.live.lock()
    }

    /// Makes the checkpoint at `dir` the current snapshot and drops older
    /// ones. A snapshot older than the current one is not committed (it lost
    /// a race with an install): its directory is removed and false returned.
    pub fn commit(&self, dir: &Path, meta: &SnapshotMeta) -> io::Result<bool> {
        let _layout = self.layout.lock();
        let name = Self::id_of(dir);
        if let Some(current) = read_named(&self.root.join(CURRENT))? {
            if current.dir != name && current.meta.last_log_id > meta.last_log_id {
                std::fs::remove_dir_all(dir)?;
                return Ok(false);
            }
        }
        let current = Named {
            meta: meta.clone(),
            dir: name,
        };
        write_atomic(
            &self.root.join(CURRENT),
            &serde_json::to_vec(&current).map_err(io::Error::other)?,
        )?;
        let mut keep = vec![current.dir];
        if let Some(installing) = read_named(&self.root.join(INSTALLING))? {
            keep.push(installing.dir);
        }
        self.remove_others(&keep, false)?;
        Ok(true)
    }

    /// The current snapshot's meta and checkpoint directory.
    pub fn current(&self) -> io::Result<Option<(SnapshotMeta, PathBuf)>> {
        Ok(read_named(&self.root.join(CURRENT))?.map(|c| (c.meta, self.root.join(c.dir))))
    }

    pub fn current_meta(&self) -> io::Result<Option<SnapshotMeta>> {
        Ok(self.current()?.map(|(meta, _)| meta))
    }

    /// The current snapshot's meta and a file for it that exists without
    /// packing: its pack if written already, else the descriptor.
    pub fn current_file(&self) -> io::Result<Option<(SnapshotMeta, PathBuf)>> {
        let Some((meta, dir)) = self.current()? else {
            return Ok(None);
        };
        let pack = Self::pack_path(&dir);
        let path = if pack.exists() {
            pack
        } else {
            self.root.join(CURRENT)
        };
        Ok(Some((meta, path)))
    }

    /// The current snapshot's descriptor file, as a handle openraft can hold
    /// where it wants a snapshot it will not read (a freshly built one).
    pub async fn meta_file(&self) -> io::Result<tokio::fs::File> {
        tokio::fs::File::open(self.root.join(CURRENT)).await
    }

    fn pack_path(dir: &Path) -> PathBuf {
        let mut name = dir.as_os_str().to_owned();
        name.push(PACK_SUFFIX);
        PathBuf::from(name)
    }

    /// The current snapshot's meta and packed file, packing it first if that
    /// has not happened yet. Blocking (it may copy the whole checkpoint).
    pub fn packed(&self) -> io::Result<Option<(SnapshotMeta, PathBuf)>> {
        let Some((meta, dir)) = self.current()? else {
            return Ok(None);
        };
        let path = Self::pack_path(&dir);
        let _packing = self.packing.lock();
        if path.exists() {
            return Ok(Some((meta, path)));
        }
        let started = std::time::Instant::now();
        let tmp_name = format!("{}{PACK_SUFFIX}{TMP_SUFFIX}", Self::id_of(&dir));
        let _busy = self.mark_busy(tmp_name.clone());
        let tmp = self.root.join(&tmp_name);
        let stats = pack::pack(&dir, &tmp)?;
        std::fs::rename(&tmp, &path)?;
        fsync_dir(&self.root)?;
        // A newer snapshot committed meanwhile removed `dir`: drop its pack too.
        if self.current()?.map(|(_, d)| d) != Some(dir.clone()) {
            let _ = std::fs::remove_file(&path);
            return Err(io::Error::other("snapshot replaced while packing it"));
        }
        tracing::info!(
            last_log_id = ?meta.last_log_id,
            files = stats.files,
            bytes = stats.data_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "packed snapshot"
        );
        Ok(Some((meta, path)))
    }

    /// A new empty file to receive a snapshot from the leader into.
    pub async fn incoming_file(&self) -> io::Result<tokio::fs::File> {
        let path = self.root.join(format!(
            "{INCOMING}{}",
            self.counter.fetch_add(1, Ordering::Relaxed)
        ));
        tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .await
    }

    /// Finds which received file `file` is, keeps it as the pack of the
    /// checkpoint `dir`, and removes every other received file (abandoned
    /// transfers: openraft receives one snapshot at a time).
    pub fn adopt_incoming(&self, file: &std::fs::File, dir: &Path) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let received = file.metadata()?;
        for item in std::fs::read_dir(&self.root)? {
            let item = item?;
            if !item.file_name().to_string_lossy().starts_with(INCOMING) {
                continue;
            }
            let m = item.metadata()?;
            if (m.dev(), m.ino()) == (received.dev(), received.ino()) {
                std::fs::rename(item.path(), Self::pack_path(dir))?;
            } else {
                std::fs::remove_file(item.path())?;
            }
        }
        fsync_dir(&self.root)
    }

    /// Removes every received file (after a rejected snapshot).
    pub fn discard_incoming(&self) -> io::Result<()> {
        for item in std::fs::read_dir(&self.root)? {
            let item = item?;
            if item.file_name().to_string_lossy().starts_with(INCOMING) {
                std::fs::remove_file(item.path())?;
            }
        }
        Ok(())
    }

    /// Durably records that the live state is about to be replaced by the
    /// checkpoint at `dir` (unpacked and complete).
    pub fn begin_install(&self, dir: &Path, meta: &SnapshotMeta) -> io::Result<()> {
        let marker = Named {
            meta: meta.clone(),
            dir: Self::id_of(dir),
        };
        write_atomic(
            &self.root.join(INSTALLING),
            &serde_json::to_vec(&marker).map_err(io::Error::other)?,
        )
    }

    /// The install a crash interrupted, if any: its meta and checkpoint.
    pub fn pending_install(&self) -> io::Result<Option<(SnapshotMeta, PathBuf)>> {
        Ok(read_named(&self.root.join(INSTALLING))?.map(|m| (m.meta, self.root.join(m.dir))))
    }

    /// The install is complete (and flushed): forget the marker.
    pub fn end_install(&self) -> io::Result<()> {
        match std::fs::remove_file(self.root.join(INSTALLING)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fsync_dir(&self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_at(_dir: &Path, index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(crate::codec::log_id(1, 1, index)),
            ..Default::default()
        }
    }

    #[test]
    fn commit_keeps_only_the_newest_and_open_cleans_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path().join("s")).unwrap();
        assert!(snaps.current_meta().unwrap().is_none());

        let (first, busy) = snaps.new_checkpoint_dir();
        std::fs::create_dir(&first).unwrap();
        assert!(snaps.commit(&first, &meta_at(&first, 5)).unwrap());
        drop(busy);
        let (second, _b2) = snaps.new_checkpoint_dir();
        std::fs::create_dir(&second).unwrap();
        let meta2 = meta_at(&second, 9);
        assert!(snaps.commit(&second, &meta2).unwrap());
        assert!(!first.exists(), "older snapshot removed");
        assert_eq!(
            snaps.current_meta().unwrap().unwrap().last_log_id,
            meta2.last_log_id
        );
        // An older one (it lost a race with an install) is not committed.
        let (stale, _b3) = snaps.new_checkpoint_dir();
        std::fs::create_dir(&stale).unwrap();
        assert!(!snaps.commit(&stale, &meta_at(&stale, 7)).unwrap());
        assert!(!stale.exists());

        // A checkpoint that never got committed (crash mid-build) is cleaned up,
        // and so is a half-received file.
        let (orphan, busy) = snaps.new_checkpoint_dir();
        std::fs::create_dir(&orphan).unwrap();
        drop(busy);
        std::fs::write(dir.path().join("s/incoming-3"), b"half").unwrap();
        let reopened = SnapshotDir::open(dir.path().join("s")).unwrap();
        assert!(!orphan.exists());
        assert!(!dir.path().join("s/incoming-3").exists());
        assert!(second.exists());
        assert_eq!(
            reopened.current_meta().unwrap().unwrap().last_log_id,
            meta2.last_log_id
        );
    }

    #[test]
    fn packs_lazily_once_and_an_install_marker_keeps_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path().join("s")).unwrap();
        assert!(snaps.packed().unwrap().is_none());
        let (cp, _busy) = snaps.new_checkpoint_dir();
        std::fs::create_dir(&cp).unwrap();
        std::fs::write(cp.join("CURRENT"), b"x").unwrap();
        snaps.commit(&cp, &meta_at(&cp, 3)).unwrap();
        let (_, path) = snaps.packed().unwrap().unwrap();
        let first = std::fs::metadata(&path).unwrap().modified().unwrap();
        let (_, again) = snaps.packed().unwrap().unwrap();
        assert_eq!(path, again);
        assert_eq!(
            std::fs::metadata(&again).unwrap().modified().unwrap(),
            first
        );

        let (unpacked, busy) = snaps.new_checkpoint_dir();
        std::fs::create_dir(&unpacked).unwrap();
        snaps
            .begin_install(&unpacked, &meta_at(&unpacked, 8))
            .unwrap();
        drop(busy);
        let reopened = SnapshotDir::open(dir.path().join("s")).unwrap();
        assert!(unpacked.exists() && cp.exists() && path.exists());
        let (meta, at) = reopened.pending_install().unwrap().unwrap();
        assert_eq!((meta.last_log_id.unwrap().index, at), (8, unpacked.clone()));
        reopened.commit(&unpacked, &meta).unwrap();
        reopened.end_install().unwrap();
        assert!(reopened.pending_install().unwrap().is_none());
        assert!(
            !cp.exists() && !path.exists(),
            "older snapshot and its pack removed"
        );
    }
}
