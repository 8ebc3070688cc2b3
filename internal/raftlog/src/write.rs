//! The write side: every mutation encodes its records into one buffer and
//! writes it with one pwrite at the end of the active file, under the writer
//! lock, then updates the index. Rolling writes a checkpoint first.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use chronos_wal::FsyncMode;

use crate::codec::{self, Kind, MAX_BODY_BYTES};
use crate::error::RaftLogError;
use crate::files;
use crate::log::{Counters, Inner, LogFile, RaftLog};
use crate::memtable::Loc;
use crate::options::DurableCallback;
use crate::prealloc;

impl Inner {
    pub(crate) fn check_writable(&self) -> Result<(), RaftLogError> {
        match &self.poisoned {
            Some(e) => Err(RaftLogError::Poisoned(e.clone())),
            None => Ok(()),
        }
    }

    fn poison(&mut self, err: &RaftLogError) {
        tracing::error!(error = %err, "raft log write failed; refusing further writes");
        self.poisoned.get_or_insert_with(|| err.into());
    }

    /// Writes `buf` at the end of the active file (rolling first if it would
    /// pass `file_bytes`); returns the file and offset it landed at. A failed
    /// write poisons the log: part of it may be on disk.
    pub(crate) fn write_records(
        &mut self,
        dir: &Path,
        file_bytes: u64,
        buf: &[u8],
    ) -> Result<(u64, u64), RaftLogError> {
        self.check_writable()?;
        let len = self.files[&self.active].len;
        if len + buf.len() as u64 > file_bytes && len > self.active_start {
            self.roll(dir)?;
        }
        let active = self.active;
        let lf = self.files.get_mut(&active).ok_or(RaftLogError::Closed)?;
        let offset = lf.len;
        self.zeroing
            .wait_clear(active, offset, offset + buf.len() as u64);
        if let Err(e) = lf.file.write_all_at(buf, offset) {
            let err = RaftLogError::Io {
                op: "write",
                source: e,
            };
            self.poison(&err);
            return Err(err);
        }
        lf.len += buf.len() as u64;
        if lf.zeroed < prealloc::target(lf.len, file_bytes)
            && lf.zeroed < lf.len + prealloc::AHEAD_BYTES / 2
        {
            self.prealloc_wake.notify_one();
        }
        Ok((active, offset))
    }

    /// Starts a new active file: header, then a checkpoint of every
    /// partition's vote and purge point, so no older file holds the only
    /// copy of any meta and old files can go once their entries are dead.
    pub(crate) fn roll(&mut self, dir: &Path) -> Result<(), RaftLogError> {
        self.check_writable()?;
        let seq = self.active + 1;
        let mut buf = codec::file_header().to_vec();
        let mut parts: Vec<_> = self.parts.iter().collect();
        parts.sort_unstable_by_key(|(p, _)| **p);
        for (p, state) in parts {
            if let Some(vote) = &state.vote {
                codec::encode(&mut buf, Kind::Vote, *p, 0, vote);
            }
            if let Some((upto, meta)) = &state.purged {
                codec::encode(&mut buf, Kind::Purge, *p, *upto, meta);
            }
        }
        let created = files::create_new(&files::file_path(dir, seq)).and_then(|f| {
            f.write_all_at(&buf, 0)
                .map(|()| f)
                .map_err(RaftLogError::io("write checkpoint"))
        });
        let file = match created {
            Ok(f) => Arc::new(f),
            Err(e) => {
                // A half-made file would make the next roll fail forever.
                self.poison(&e);
                return Err(e);
            }
        };
        if let Some(old) = self.files.get(&self.active) {
            self.unsynced.push(Arc::clone(&old.file));
        }
        let len = buf.len() as u64;
        self.files.insert(
            seq,
            LogFile {
                file,
                len,
                zeroed: len,
            },
        );
        self.prealloc_wake.notify_one();
        self.active = seq;
        self.active_start = len;
        self.dir_dirty = true;
        Ok(())
    }
}

fn check_body(len: usize) -> Result<(), RaftLogError> {
    if len > MAX_BODY_BYTES {
        return Err(RaftLogError::TooLarge { len_bytes: len });
    }
    Ok(())
}

impl RaftLog {
    /// Appends entries of one partition. Indexes must be consecutive and
    /// continue the partition's log (`first == last + 1`), or, when it holds
    /// no entries, start at purged + 1 (any index if never purged). An index
    /// at or below the last one is an error: truncate first.
    ///
    /// The entries are written (page cache) before this returns, so reads see
    /// them at once. `on_durable` runs once they are fsynced — one fdatasync
    /// covers every partition's writes before it — or with the error; it runs
    /// on the flusher thread and must not call `sync` or `save_vote`. In
    /// `Periodic` mode it runs right here after the write (NOT durable).
    /// If this returns `Err`, nothing was appended and `on_durable` never runs.
    pub fn append(
        &self,
        partition: u32,
        entries: &[(u64, &[u8])],
        on_durable: DurableCallback,
    ) -> Result<(), RaftLogError> {
        let invalid = |reason: String| RaftLogError::InvalidAppend { partition, reason };
        let Some(&(first, _)) = entries.first() else {
            return Err(invalid("no entries".into()));
        };
        let shared = &self.shared;
        let mut inner = shared.inner.lock();
        inner.check_writable()?;
        let state = inner.parts.get(&partition);
        if let Some(expected) = state.and_then(|s| s.next_index()) {
            if first != expected {
                return Err(invalid(format!("first index {first}, expected {expected}")));
            }
        }
        let mut buf = Vec::new();
        let mut placed = Vec::with_capacity(entries.len());
        for (i, (index, payload)) in entries.iter().enumerate() {
            if Some(*index) != first.checked_add(i as u64) {
                return Err(invalid(format!("index {index} breaks the batch's run")));
            }
            check_body(payload.len())?;
            placed.push(codec::encode(
                &mut buf,
                Kind::Entry,
                partition,
                *index,
                payload,
            ));
        }
        let (file_seq, base) = inner.write_records(&shared.dir, shared.opts.file_bytes, &buf)?;
        let state = inner.parts.entry(partition).or_default();
        for ((index, _), (offset, len)) in entries.iter().zip(placed) {
            let offset = base + offset;
            state.push(
                *index,
                Loc {
                    file_seq,
                    offset,
                    len,
                },
            );
        }
        let c = &shared.counters;
        Counters::add(&c.appends, 1);
        Counters::add(&c.entries_appended, entries.len() as u64);
        Counters::add(&c.bytes_written, buf.len() as u64);
        if let FsyncMode::Periodic { .. } = shared.opts.fsync {
            shared.enqueue(None, buf.len() as u64, false);
            drop(inner);
            on_durable(Ok(()));
        } else {
            shared.enqueue(Some(on_durable), buf.len() as u64, false);
        }
        Ok(())
    }

    /// Drops entries >= `from_index` (a Raft conflict). Recorded in the log,
    /// ordered before later appends; durable with the next fsync.
    pub fn truncate(&self, partition: u32, from_index: u64) -> Result<(), RaftLogError> {
        let mut inner = self.shared.inner.lock();
        inner.check_writable()?;
        let holds = inner.parts.get(&partition).and_then(|s| s.range());
        if !matches!(holds, Some((_, last)) if from_index <= last) {
            return Ok(()); // nothing to drop; no record needed
        }
        let mut buf = Vec::new();
        codec::encode(&mut buf, Kind::Truncate, partition, from_index, &[]);
        self.write_meta(&mut inner, &buf)?;
        if let Some(state) = inner.parts.get_mut(&partition) {
            state.truncate(from_index);
            if state.is_blank() {
                inner.parts.remove(&partition);
            }
        }
        Ok(())
    }

    /// Drops entries <= `upto_index` (which may be past the last entry: the
    /// partition then continues at `upto_index + 1`) and remembers the drop
    /// point with the caller's `meta` blob (see [`RaftLog::purged`]). The drop
    /// point never moves backwards: a lower `upto_index` only replaces the meta
    /// (the caller's own purge point may be logical, below what [`compact`]
    /// dropped).
    ///
    /// [`compact`]: RaftLog::compact
    pub fn purge(&self, partition: u32, upto_index: u64, meta: &[u8]) -> Result<(), RaftLogError> {
        check_body(meta.len())?;
        let mut inner = self.shared.inner.lock();
        inner.check_writable()?;
        let floor = inner
            .parts
            .get(&partition)
            .and_then(|s| s.purged.as_ref())
            .map_or(0, |(upto, _)| *upto);
        self.write_purge(&mut inner, partition, upto_index.max(floor), meta)
    }

    /// Drops entries <= `upto_index` and keeps the purge meta as it is: the
    /// caller holds those entries elsewhere. A no-op at or below the current
    /// drop point.
    pub fn compact(&self, partition: u32, upto_index: u64) -> Result<(), RaftLogError> {
        let mut inner = self.shared.inner.lock();
        inner.check_writable()?;
        let (floor, meta) = match inner.parts.get(&partition).and_then(|s| s.purged.as_ref()) {
            Some((upto, meta)) => (*upto, meta.clone()),
            None => (0, Vec::new()),
        };
        if upto_index <= floor {
            return Ok(());
        }
        self.write_purge(&mut inner, partition, upto_index, &meta)
    }

    fn write_purge(
        &self,
        inner: &mut Inner,
        partition: u32,
        upto: u64,
        meta: &[u8],
    ) -> Result<(), RaftLogError> {
        let mut buf = Vec::new();
        codec::encode(&mut buf, Kind::Purge, partition, upto, meta);
        self.write_meta(inner, &buf)?;
        let state = inner.parts.entry(partition).or_default();
        state.purge(upto, meta.to_vec());
        Ok(())
    }

    /// Drops every entry of `partition` and its purge point, and returns once
    /// that is fsynced: its replica left this node, and one opened here again
    /// starts from an empty log. The vote stays (a vote forgotten could be
    /// cast twice in one term).
    pub fn forget(&self, partition: u32) -> Result<(), RaftLogError> {
        {
            let mut inner = self.shared.inner.lock();
            inner.check_writable()?;
            let mut buf = Vec::new();
            codec::encode(&mut buf, Kind::Forget, partition, 0, &[]);
            self.write_meta(&mut inner, &buf)?;
            if let Some(state) = inner.parts.get_mut(&partition) {
                state.forget();
                if state.is_blank() {
                    inner.parts.remove(&partition);
                }
            }
        }
        self.sync()
    }

    /// Stores the partition's vote and returns once it is fsynced, whatever
    /// the fsync mode: a vote forgotten after a crash breaks Raft's safety.
    pub fn save_vote(&self, partition: u32, vote: &[u8]) -> Result<(), RaftLogError> {
        check_body(vote.len())?;
        {
            let mut inner = self.shared.inner.lock();
            inner.check_writable()?;
            let mut buf = Vec::new();
            codec::encode(&mut buf, Kind::Vote, partition, 0, vote);
            self.write_meta(&mut inner, &buf)?;
            inner.parts.entry(partition).or_default().vote = Some(vote.to_vec());
        }
        self.sync()
    }

    /// Fsyncs everything written so far and returns once done (shutdown,
    /// votes, gc). Must not be called from an `on_durable` callback.
    pub fn sync(&self) -> Result<(), RaftLogError> {
        let (tx, rx) = mpsc::channel();
        let cb: DurableCallback = Box::new(move |r| {
            // The receiver only goes away if the caller's thread died.
            let _ = tx.send(r);
        });
        self.shared.enqueue(Some(cb), 0, true);
        rx.recv().map_err(|_| RaftLogError::Closed)?
    }

    fn write_meta(&self, inner: &mut Inner, buf: &[u8]) -> Result<(), RaftLogError> {
        let shared = &self.shared;
        inner.write_records(&shared.dir, shared.opts.file_bytes, buf)?;
        Counters::add(&shared.counters.bytes_written, buf.len() as u64);
        shared.enqueue(None, buf.len() as u64, false);
        Ok(())
    }
}
