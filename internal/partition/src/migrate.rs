//! Taking over a partition written by the layout before the node's shared
//! Raft log, where `wal/` was both the partition's Raft log and its history
//! (with `vote.json` and `purged.json` beside the segments).
//!
//! The segments stay where they are and become the history (same format),
//! which serves openraft the applied entries. The rest is copied into the
//! node's log: the entries after the state machine's applied index (replicas
//! may count them toward a commit), openraft's purge point, the node log's
//! own compaction point (the applied index) and the vote — fsynced — and only
//! then is the history cut back to the applied index (the old log may hold
//! entries that were never committed) and are the two files renamed
//! `*.migrated`. A crash before the cut redoes the copy from scratch (the
//! node log's copy is truncated first); after it, the copy is complete and
//! only the rest is redone.

use std::path::Path;

use chronos_raftlog::RaftLog;

use crate::codec;
use crate::history::History;
use crate::log_store::read_json;
use crate::types::LogId;

const VOTE_FILE: &str = "vote.json";
const PURGED_FILE: &str = "purged.json";
/// Entries copied per append.
const CHUNK_ENTRIES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("reading {what}: {source}")]
    Read {
        what: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("writing the node's raft log: {0}")]
    Write(#[from] chronos_raftlog::RaftLogError),
    #[error("cutting the history back to the applied index: {0}")]
    Cut(Box<dyn std::error::Error + Send + Sync>),
    #[error("renaming {file} after the copy: {source}")]
    Rename {
        file: &'static str,
        source: std::io::Error,
    },
}

fn read_err(
    what: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> MigrateError {
    move |source| MigrateError::Read { what, source }
}

/// Copies partition `id`'s old Raft log state into `log` if `wal_dir` still
/// has it (see the module doc); a no-op otherwise.
pub fn take_over_old_log(
    id: u32,
    log: &RaftLog,
    history: &History,
    wal_dir: &Path,
    applied: Option<LogId>,
) -> Result<(), MigrateError> {
    let (vote_path, purged_path) = (wal_dir.join(VOTE_FILE), wal_dir.join(PURGED_FILE));
    if !vote_path.exists() && !purged_path.exists() {
        return Ok(());
    }
    let vote = match std::fs::read(&vote_path) {
        Ok(raw) => Some(raw),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(read_err("vote.json")(Box::new(e))),
    };
    let old_purged: Option<LogId> =
        read_json(&purged_path).map_err(|e| read_err("purged.json")(Box::new(e)))?;
    let applied_index = applied.map_or(0, |l| l.index);
    let mut copied = 0u64;
    let uncut = history.last_index().is_some_and(|l| l > applied_index);
    if let (true, Some(first)) = (uncut, history.wal().first_index()) {
        if log.range(id).is_some() {
            log.truncate(id, applied_index + 1)?;
        }
        let wal = history.wal();
        let iter = wal
            .iter_from_index((applied_index + 1).max(first))
            .map_err(|e| read_err("the old log")(Box::new(e)))?;
        let mut chunk: Vec<(u64, Vec<u8>)> = Vec::new();
        for item in iter {
            let (header, payload) = item.map_err(|e| read_err("the old log")(Box::new(e)))?;
            let entry = codec::decode(&header, &payload)
                .map_err(|e| read_err("the old log")(Box::new(e)))?;
            chunk.push((header.index, codec::encode_entry(&entry)));
            if chunk.len() == CHUNK_ENTRIES {
                copied += append(log, id, &mut chunk)?;
            }
        }
        copied += append(log, id, &mut chunk)?;
    }
    if applied_index > 0 || old_purged.is_some() {
        let raw =
            serde_json::to_vec(&old_purged).map_err(|e| read_err("purge point")(Box::new(e)))?;
        log.purge(id, applied_index, &raw)?;
    }
    match &vote {
        // The vote is fsynced, and with it everything written before it.
        Some(raw) => log.save_vote(id, raw)?,
        None => log.sync()?,
    }
    if uncut {
        history
            .wal()
            .truncate_from(applied_index + 1)
            .map_err(|e| MigrateError::Cut(Box::new(e)))?;
    }
    for (path, file) in [(&vote_path, VOTE_FILE), (&purged_path, PURGED_FILE)] {
        if path.exists() {
            std::fs::rename(path, path.with_extension("json.migrated"))
                .map_err(|source| MigrateError::Rename { file, source })?;
        }
    }
    tracing::info!(
        partition = id,
        copied,
        applied = applied_index,
        "took over the Raft log of the older layout (its segments are now the history)"
    );
    Ok(())
}

fn append(log: &RaftLog, id: u32, chunk: &mut Vec<(u64, Vec<u8>)>) -> Result<u64, MigrateError> {
    if chunk.is_empty() {
        return Ok(0);
    }
    let records: Vec<(u64, &[u8])> = chunk.iter().map(|(i, r)| (*i, r.as_slice())).collect();
    log.append(id, &records, Box::new(|_| {}))?;
    let n = chunk.len() as u64;
    chunk.clear();
    Ok(n)
}
