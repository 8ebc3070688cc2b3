//! Installing a snapshot received from the leader: the live RocksDB (whose
//! [`Store`] handle other tasks share) takes the snapshot's contents.
//!
//! Procedure, off the async runtime:
//! 1. Unpack the received file into a new checkpoint directory (every CRC,
//!    the file count and the trailer checked; everything fsynced) and check
//!    that the checkpoint's applied log id is the one the meta names. Any
//!    failure: the directory and the received file are removed, the live
//!    state was not touched, and a `io::Error` says why.
//! 2. Write `snapshots/installing.json` naming the checkpoint (fsynced).
//! 3. Under the snapshot dir's live lock (no checkpoint can be taken midway):
//!    delete every key of every column family, copy the checkpoint's keys in
//!    bounded write batches, write the meta's applied log id and membership,
//!    flush (atomically across column families).
//! 4. Make the checkpoint the current snapshot (the received file becomes
//!    its pack, so this node can ship it on), then remove the marker.
//!
//! **Crash safety.** Before step 2 the live state is untouched and the next
//! open removes the leftovers. From step 2 on the marker names a complete
//! checkpoint, and [`StateMachine::open`] redoes steps 3–4 before anything
//! reads the state; step 3 is idempotent (clear, then copy), so a crash in the
//! middle of it — with some batches flushed and others not — or a crash during
//! the redo itself only means doing it again. The marker goes only after the
//! flush, so it never disappears while the live state is partial.

use std::io::{self, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::time::Instant;

use chronos_store::{ReplaceStats, Store};

use super::{read_meta, sm_err, to_json, StateMachine, META_APPLIED, META_MEMBERSHIP};
use crate::snapshot::{unpack, PackStats, SnapshotDir};
use crate::types::{LogId, SnapshotMeta};

/// Upper bound on one write batch while copying a checkpoint into the live store.
const COPY_BATCH_BYTES: usize = 4 << 20;

/// What an install did and how long it took.
#[derive(Debug, Default, Clone, Copy)]
pub struct InstallReport {
    pub unpacked: PackStats,
    pub copied: ReplaceStats,
    pub unpack_ms: u64,
    pub replace_ms: u64,
}

impl StateMachine {
    /// Installs the snapshot `meta` whose packed form openraft received into
    /// `file`; see the module doc. Afterwards everything derived from the
    /// store in memory is reloaded and the owner woken.
    pub(super) async fn install_received(
        &mut self,
        meta: &SnapshotMeta,
        file: tokio::fs::File,
    ) -> Result<InstallReport, io::Error> {
        let file = file.into_std().await;
        let (store, snapshots, owned) = (self.store.clone(), self.snapshots.clone(), meta.clone());
        let report =
            tokio::task::spawn_blocking(move || install_blocking(&store, &snapshots, &owned, file))
                .await
                .map_err(sm_err)??;
        self.reload()?;
        // The fire logs changed under the owner (it delivers only when
        // leading, and reloads its groups then).
        self.shared
            .fire_log_changes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.shared.notice.notify_one();
        metrics::counter!("chronos_snapshots_installed_total").increment(1);
        tracing::info!(
            last_log_id = ?meta.last_log_id,
            last_log_id = %meta.last_log_id.map(|l| l.to_string()).unwrap_or_default(),
            files = report.unpacked.files,
            pack_bytes = report.unpacked.data_bytes,
            keys = report.copied.keys,
            unpack_ms = report.unpack_ms,
            replace_ms = report.replace_ms,
            "installed snapshot from the leader"
        );
        Ok(report)
    }
}

fn install_blocking(
    store: &Store,
    snapshots: &SnapshotDir,
    meta: &SnapshotMeta,
    mut file: std::fs::File,
) -> Result<InstallReport, io::Error> {
    let started = Instant::now();
    let (dir, _busy) = snapshots.new_checkpoint_dir();
    let unpacked = file
        .seek(SeekFrom::Start(0))
        .map_err(|e| e.to_string())
        .and_then(|_| unpack(BufReader::new(&file), &dir).map_err(|e| e.to_string()))
        .and_then(|stats| check_checkpoint(&dir, meta).map(|()| stats));
    let unpacked = match unpacked {
        Ok(stats) => stats,
        Err(why) => {
            let _ = std::fs::remove_dir_all(&dir);
            if let Err(e) = snapshots.discard_incoming() {
                tracing::warn!("removing a rejected snapshot file: {e}");
            }
            let at = meta.last_log_id.map(|l| l.to_string()).unwrap_or_default();
            return Err(io::Error::other(format!(
                "snapshot at {at} rejected, live state unchanged: {why}"
            )));
        }
    };
    let unpack_ms = started.elapsed().as_millis() as u64;
    snapshots.begin_install(&dir, meta).map_err(sm_err)?;
    // The marker protects the checkpoint and its pack from cleanup from here on.
    if let Err(e) = snapshots.adopt_incoming(&file, &dir) {
        // Only a cache: the checkpoint is packed again if it must be shipped.
        tracing::warn!("keeping the received snapshot file as its pack: {e}");
    }
    drop(file);
    let started = Instant::now();
    let copied = replace_live(store, snapshots, &dir, meta)?;
    Ok(InstallReport {
        unpacked,
        copied,
        unpack_ms,
        replace_ms: started.elapsed().as_millis() as u64,
    })
}

/// The unpacked checkpoint must hold the state the meta describes.
fn check_checkpoint(dir: &Path, meta: &SnapshotMeta) -> Result<(), String> {
    let copy = Store::open_read_only(dir).map_err(|e| format!("opening the checkpoint: {e}"))?;
    let applied: Option<LogId> =
        read_meta(&copy, META_APPLIED).map_err(|e| format!("reading its applied id: {e}"))?;
    if applied != meta.last_log_id {
        return Err(format!(
            "the checkpoint is at {applied:?}, the meta says {:?}",
            meta.last_log_id
        ));
    }
    Ok(())
}

/// Steps 3 and 4: replace the live contents with the checkpoint at `dir`,
/// flush, make it the current snapshot, forget the marker. Idempotent.
pub(super) fn replace_live(
    store: &Store,
    snapshots: &SnapshotDir,
    dir: &Path,
    meta: &SnapshotMeta,
) -> Result<ReplaceStats, io::Error> {
    let write = |e: chronos_store::StoreError| sm_err(e);
    let copied = {
        let _live = snapshots.lock_live();
        let src = Store::open_read_only(dir).map_err(sm_err)?;
        let copied = store.replace_with(&src, COPY_BATCH_BYTES).map_err(write)?;
        drop(src);
        super::ensure_due_counts(store)?;
        let mut batch = store.batch();
        if let Some(applied) = &meta.last_log_id {
            batch.put_meta(META_APPLIED, &to_json(applied)?);
        }
        batch.put_meta(META_MEMBERSHIP, &to_json(&meta.last_membership)?);
        batch.commit().map_err(write)?;
        store.flush().map_err(write)?;
        copied
    };
    snapshots.commit(dir, meta).map_err(sm_err)?;
    snapshots.end_install().map_err(sm_err)?;
    Ok(copied)
}

/// Finishes an install a crash interrupted (the marker is still there).
/// Runs in [`StateMachine::open`] before anything reads the state.
pub(super) fn finish_interrupted(store: &Store, snapshots: &SnapshotDir) -> Result<(), io::Error> {
    let Some((meta, dir)) = snapshots.pending_install().map_err(sm_err)? else {
        return Ok(());
    };
    tracing::warn!(
        last_log_id = ?meta.last_log_id,
        dir = %dir.display(),
        "finishing a snapshot install interrupted by a crash"
    );
    replace_live(store, snapshots, &dir, &meta)?;
    Ok(())
}
