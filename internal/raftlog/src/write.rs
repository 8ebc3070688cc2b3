//! The write side: every mutation encodes its records into one buffer and
//! writes it with one pwrite at the end of the active file, under the writer
//! lock, then updates the index. Rolling writes a checkpoint first.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use chronos_wal::FsyncMode;

use crate::codec::{self, Format, Kind, MAX_BODY_BYTES};
use crate::error::RaftLogError;
use crate::files;
use crate::log::{Counters, Inner, LogFile, RaftLog, Shared};
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

    /// Writes `buf` at `at` in `file`; a failure poisons the log (part of it
    /// may be on disk).
    fn write_at(
        &mut self,
        file: &std::fs::File,
        buf: &[u8],
        at: u64,
        op: &'static str,
    ) -> Result<(), RaftLogError> {
        file.write_all_at(buf, at).map_err(|source| {
            let err = RaftLogError::Io { op, source };
            self.poison(&err);
            err
        })
    }

    /// Makes room for `bytes` more in the active file (rolling first if they
    /// would push it past `file_bytes` and it holds more than its
    /// checkpoint) and returns the stamp the records written next carry.
    pub(crate) fn room(
        &mut self,
        dir: &Path,
        file_bytes: u64,
        bytes: u64,
    ) -> Result<u64, RaftLogError> {
        self.check_writable()?;
        let len = self.files[&self.active].len;
        if len + bytes > file_bytes && len > self.active_start {
            self.roll(dir)?;
        }
        Ok(self.files[&self.active].stamp())
    }

    /// Writes `buf` (records encoded with the stamp [`Inner::room`] gave, and
    /// no roll since) at the end of the active file; returns the file and
    /// offset it landed at. A failed write poisons the log: part of it may
    /// be on disk.
    pub(crate) fn write_records(
        &mut self,
        file_bytes: u64,
        buf: &[u8],
    ) -> Result<(u64, u64), RaftLogError> {
        self.check_writable()?;
        let active = self.active;
        let lf = self.files.get(&active).ok_or(RaftLogError::Closed)?;
        let (offset, file) = (lf.len, Arc::clone(&lf.file));
        self.zeroing
            .wait_clear(active, offset, offset + buf.len() as u64);
        self.write_at(&file, buf, offset, "write")?;
        let lf = self.files.get_mut(&active).ok_or(RaftLogError::Closed)?;
        lf.len += buf.len() as u64;
        if lf.allocated < prealloc::target(lf.len, file_bytes)
            && lf.allocated < lf.len + prealloc::AHEAD_BYTES / 2
        {
            self.prealloc_wake.notify_one();
        }
        Ok((active, offset))
    }

    /// Seals the active file and starts the next one (a spare if there is
    /// one) with a header and a checkpoint: every partition's vote and purge
    /// point, so that older files can be deleted without losing either.
    pub(crate) fn roll(&mut self, dir: &Path) -> Result<(), RaftLogError> {
        self.check_writable()?;
        if let Some(old) = self.files.get(&self.active) {
            if let Format::V2 { stamp } = old.format {
                let mut seal = Vec::new();
                codec::encode(&mut seal, stamp, Kind::Seal, 0, 0, &[]);
                let (at, file) = (old.len, Arc::clone(&old.file));
                self.zeroing
                    .wait_clear(self.active, at, at + seal.len() as u64);
                self.write_at(&file, &seal, at, "write seal")?;
                if let Some(old) = self.files.get_mut(&self.active) {
                    old.len += seal.len() as u64;
                }
            }
        }
        let seq = self.active + 1;
        let nonce = new_nonce(seq);
        let stamp = codec::stamp(nonce, seq);
        let mut buf = codec::file_header(nonce).to_vec();
        let mut parts: Vec<_> = self.parts.iter().collect();
        parts.sort_unstable_by_key(|(p, _)| **p);
        for (p, state) in parts {
            if let Some(vote) = &state.vote {
                codec::encode(&mut buf, stamp, Kind::Vote, *p, 0, vote);
            }
            if let Some((upto, meta)) = &state.purged {
                codec::encode(&mut buf, stamp, Kind::Purge, *p, *upto, meta);
            }
        }
        let path = files::file_path(dir, seq);
        let (file, allocated) = match self.take_spare(&path) {
            Some(reused) => {
                self.files_reused += 1;
                reused
            }
            None => match files::create_new(&path) {
                Ok(f) => (Arc::new(f), 0),
                Err(e) => {
                    self.poison(&e);
                    return Err(e);
                }
            },
        };
        self.write_at(&file, &buf, 0, "write checkpoint")?;
        if let Some(old) = self.files.get(&self.active) {
            self.unsynced.push(Arc::clone(&old.file));
        }
        let len = buf.len() as u64;
        self.files.insert(
            seq,
            LogFile {
                file,
                len,
                allocated: allocated.max(len),
                format: Format::V2 { stamp },
            },
        );
        self.rolled_since_reclaim = true;
        self.prealloc_wake.notify_one();
        self.active = seq;
        self.active_start = len;
        self.dir_dirty = true;
        Ok(())
    }
}

/// A nonce no earlier use of a reused file can have had: its records then
/// never carry the new stamp, whatever a payload of theirs held.
fn new_nonce(seq: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // `RandomState` is keyed from the OS's randomness.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(seq);
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
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
        let mut bytes = 0;
        for (i, (index, payload)) in entries.iter().enumerate() {
            if Some(*index) != first.checked_add(i as u64) {
                return Err(invalid(format!("index {index} breaks the batch's run")));
            }
            check_body(payload.len())?;
            bytes += codec::record_bytes(payload.len());
        }
        let file_bytes = shared.opts.file_bytes;
        let stamp = inner.room(&shared.dir, file_bytes, bytes)?;
        let mut buf = Vec::with_capacity(bytes as usize);
        let placed: Vec<_> = entries
            .iter()
            .map(|(index, payload)| {
                codec::encode(&mut buf, stamp, Kind::Entry, partition, *index, payload)
            })
            .collect();
        let (file_seq, base) = inner.write_records(file_bytes, &buf)?;
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
        self.write_meta(&mut inner, Kind::Truncate, partition, from_index, &[])?;
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
        self.write_meta(inner, Kind::Purge, partition, upto, meta)?;
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
            self.write_meta(&mut inner, Kind::Forget, partition, 0, &[])?;
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
            self.write_meta(&mut inner, Kind::Vote, partition, 0, vote)?;
            inner.parts.entry(partition).or_default().vote = Some(vote.to_vec());
        }
        self.sync()
    }

    /// Fsyncs everything written so far and returns once done (shutdown,
    /// votes, gc). Must not be called from an `on_durable` callback.
    pub fn sync(&self) -> Result<(), RaftLogError> {
        self.shared.sync()
    }

    /// Writes one record that is not an entry.
    fn write_meta(
        &self,
        inner: &mut Inner,
        kind: Kind,
        partition: u32,
        index: u64,
        body: &[u8],
    ) -> Result<(), RaftLogError> {
        let shared = &self.shared;
        let file_bytes = shared.opts.file_bytes;
        let stamp = inner.room(&shared.dir, file_bytes, codec::record_bytes(body.len()))?;
        let mut buf = Vec::new();
        codec::encode(&mut buf, stamp, kind, partition, index, body);
        inner.write_records(file_bytes, &buf)?;
        Counters::add(&shared.counters.bytes_written, buf.len() as u64);
        shared.enqueue(None, buf.len() as u64, false);
        Ok(())
    }
}

impl Shared {
    /// See [`RaftLog::sync`].
    pub(crate) fn sync(&self) -> Result<(), RaftLogError> {
        let (tx, rx) = mpsc::channel();
        let cb: DurableCallback = Box::new(move |r| {
            // The receiver only goes away if the caller's thread died.
            let _ = tx.send(r);
        });
        self.enqueue(Some(cb), 0, true);
        rx.recv().map_err(|_| RaftLogError::Closed)?
    }
}
