//! Model test: random interleavings of appends, truncates, purges, votes, gc,
//! clean reopens and crashes (with torn tails, or a reused file's old
//! records where the unsynced tail was) over a few partitions, with and
//! without spare files, checked against a plain in-memory model after every
//! step.
//!
//! After a crash the recovered log must equal the model's state after some
//! prefix of the operations (possibly a partial append batch) that is no
//! older than the last point known durable (an `Ok` callback, a vote, a
//! `sync`). After a clean reopen it must equal the latest state exactly.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronos_raftlog::{FsyncMode, RaftLog, RaftLogOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        p: u32,
        n: u64,
        len: usize,
    },
    Truncate {
        p: u32,
        back: u64,
    },
    Purge {
        p: u32,
        fwd: u64,
    },
    /// Drop entries, keeping the purge meta; at or below the drop point a no-op.
    Compact {
        p: u32,
        fwd: u64,
    },
    Vote {
        p: u32,
        v: u8,
    },
    Gc,
    Sync,
    /// Drop without sync; optionally cut the last file somewhere past what
    /// was fsynced (per mille of that stretch).
    Crash {
        cut: Option<u64>,
    },
    Reopen,
}

/// One partition as the model sees it: entries as (index, generation, length).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Part {
    entries: Vec<(u64, u64, usize)>,
    vote: Option<Vec<u8>>,
    purged: Option<(u64, Vec<u8>)>,
}

type State = BTreeMap<u32, Part>;

const MIN_PAYLOAD: usize = 20;

/// Payloads carry their own identity so a read can be mapped back to the model.
fn payload(p: u32, index: u64, generation: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&generation.to_le_bytes());
    v.extend_from_slice(&index.to_le_bytes());
    v.extend_from_slice(&p.to_le_bytes());
    let seed = generation.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index;
    v.extend((0..len - MIN_PAYLOAD).map(|k| (seed.wrapping_add(k as u64 * 13) >> 3) as u8));
    v
}

fn identify(p: u32, index: u64, bytes: &[u8]) -> (u64, u64, usize) {
    assert!(bytes.len() >= MIN_PAYLOAD, "short payload at {p}/{index}");
    let generation = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    assert_eq!(
        bytes,
        &payload(p, index, generation, bytes.len())[..],
        "payload {p}/{index}"
    );
    (index, generation, bytes.len())
}

/// Everything the log reports, in model form.
fn snapshot(log: &RaftLog) -> State {
    let mut out = State::new();
    for p in log.partitions() {
        let read = log.read(p, 0, u64::MAX).expect("read");
        let entries: Vec<_> = read.iter().map(|(i, b)| identify(p, *i, b)).collect();
        let range = entries.first().map(|e| (e.0, entries[entries.len() - 1].0));
        assert_eq!(log.range(p), range, "partition {p}");
        out.insert(
            p,
            Part {
                entries,
                vote: log.vote(p),
                purged: log.purged(p),
            },
        );
    }
    out
}

fn normalize(state: &mut State) {
    state.retain(|_, s| !s.entries.is_empty() || s.vote.is_some() || s.purged.is_some());
}

struct Harness {
    dir: tempfile::TempDir,
    opts: RaftLogOptions,
    log: Option<RaftLog>,
    state: State,
    /// States since the last reopen; `history[floor..]` may be what a crash leaves.
    history: Vec<State>,
    floor: usize,
    /// (history index, ok) of append callbacks.
    acks: Arc<Mutex<Vec<(usize, bool)>>>,
    generation: u64,
}

impl Harness {
    fn log(&self) -> &RaftLog {
        self.log.as_ref().expect("log open")
    }

    fn record(&mut self) {
        normalize(&mut self.state);
        self.history.push(self.state.clone());
    }

    fn append(&mut self, p: u32, n: u64, len: usize) {
        let part = self.state.entry(p).or_default();
        let first = match (part.entries.last(), &part.purged) {
            (Some(e), _) => e.0 + 1,
            (None, Some((upto, _))) => upto + 1,
            (None, None) => 1 + self.generation % 5,
        };
        let g = self.generation;
        let bodies: Vec<Vec<u8>> = (first..first + n).map(|i| payload(p, i, g, len)).collect();
        let batch: Vec<(u64, &[u8])> = (first..).zip(bodies.iter().map(|b| &b[..])).collect();
        for i in first..first + n {
            self.state.entry(p).or_default().entries.push((i, g, len));
            self.record();
        }
        let (acks, at) = (Arc::clone(&self.acks), self.history.len() - 1);
        let cb = Box::new(move |r: Result<(), _>| acks.lock().expect("acks").push((at, r.is_ok())));
        self.log().append(p, &batch, cb).expect("append");
    }

    fn truncate(&mut self, p: u32, back: u64) {
        let part = self.state.entry(p).or_default();
        let from = part.entries.last().map_or(0, |e| e.0.saturating_sub(back));
        let before = part.entries.len();
        part.entries.retain(|e| e.0 < from);
        if part.entries.len() != before {
            self.record();
        }
        self.log().truncate(p, from).expect("truncate");
    }

    fn purge(&mut self, p: u32, fwd: u64) {
        let part = self.state.entry(p).or_default();
        let floor = part.purged.as_ref().map_or(0, |x| x.0);
        let base = part.entries.first().map_or(floor, |e| e.0 - 1);
        let upto = (base + fwd).max(floor);
        let meta = vec![self.generation as u8; 3];
        part.entries.retain(|e| e.0 > upto);
        part.purged = Some((upto, meta.clone()));
        self.record();
        self.log().purge(p, upto, &meta).expect("purge");
    }

    fn compact(&mut self, p: u32, fwd: u64) {
        let part = self.state.entry(p).or_default();
        let floor = part.purged.as_ref().map_or(0, |x| x.0);
        let base = part.entries.first().map_or(floor, |e| e.0 - 1);
        let upto = base + fwd;
        if upto > floor {
            let meta = part.purged.as_ref().map_or_else(Vec::new, |x| x.1.clone());
            part.entries.retain(|e| e.0 > upto);
            part.purged = Some((upto, meta));
            self.record();
        }
        self.log().compact(p, upto).expect("compact");
    }

    fn mark_durable(&mut self) {
        self.floor = self.history.len() - 1;
    }

    fn reopen(&mut self, cut: Option<Option<u64>>) {
        let clean = cut.is_none();
        let log = self.log.take().expect("log open");
        if clean {
            log.sync().expect("sync");
            self.mark_durable();
        }
        let synced = log.close_without_sync();
        if !matches!(self.opts.fsync, FsyncMode::Periodic { .. }) {
            let acks = self.acks.lock().expect("acks");
            let acked = acks.iter().filter(|(_, ok)| *ok).map(|(at, _)| *at).max();
            self.floor = self.floor.max(acked.unwrap_or(0));
        }
        if let Some(Some(per_mille)) = cut {
            cut_last_file(self.dir.path(), synced.file_seq, synced.offset, per_mille);
        }
        let log = RaftLog::open(self.dir.path(), self.opts).expect("reopen");
        let got = snapshot(&log);
        if clean || cut == Some(None) {
            assert_eq!(
                &got,
                self.history.last().expect("history"),
                "nothing was cut"
            );
        } else {
            assert!(
                self.history[self.floor..].contains(&got),
                "recovered state is no state between the durable one and the latest:\n{got:?}\nfloor {:?}\nlatest {:?}",
                self.history[self.floor], self.history.last()
            );
        }
        self.state = got.clone();
        self.history = vec![got];
        self.floor = 0;
        self.acks.lock().expect("acks").clear();
        self.log = Some(log);
    }

    fn apply(&mut self, op: Op) {
        self.generation += 1;
        match op {
            Op::Append { p, n, len } => self.append(p, n, len),
            Op::Truncate { p, back } => self.truncate(p, back),
            Op::Purge { p, fwd } => self.purge(p, fwd),
            Op::Compact { p, fwd } => self.compact(p, fwd),
            Op::Vote { p, v } => {
                let vote = vec![v, self.generation as u8];
                self.state.entry(p).or_default().vote = Some(vote.clone());
                self.record();
                self.log().save_vote(p, &vote).expect("vote");
                self.mark_durable();
            }
            Op::Gc => {
                self.log().gc().expect("gc");
            }
            Op::Sync => {
                self.log().sync().expect("sync");
                self.mark_durable();
            }
            Op::Crash { cut } => self.reopen(Some(cut)),
            Op::Reopen => self.reopen(None),
        }
        normalize(&mut self.state);
        assert_eq!(
            snapshot(self.log()),
            self.state,
            "live log differs from the model"
        );
    }
}

/// Tears the newest file between what is known fsynced and the end of its
/// records, by `per_mille` mod 3: truncated there (an appended file), zeroed
/// from there (space zero-filled ahead, which a crash leaves as zeros), or
/// from there holding what another log or spare file holds at the same
/// offsets (a reused file, whose unsynced pages a crash leaves as its earlier
/// use's records).
fn cut_last_file(dir: &Path, synced_seq: u64, synced_offset: u64, per_mille: u64) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rlog"))
        .collect();
    files.sort();
    let last = files.last().expect("a log file");
    let seq: u64 = last
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("seq");
    let data = std::fs::read(last).expect("read");
    let lo = if seq == synced_seq { synced_offset } else { 0 };
    // A record may end in zero bytes, so the end is at least `lo`.
    let written = data
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1);
    let end = written.max(lo);
    assert!(
        seq >= synced_seq && lo <= data.len() as u64,
        "fsynced past the end of the newest file"
    );
    let at = lo + (end - lo) * per_mille / 1000;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .expect("open");
    use std::os::unix::fs::FileExt;
    match per_mille % 3 {
        0 => f.set_len(at).expect("cut"),
        1 => f
            .write_all_at(&vec![0u8; (end - at) as usize], at)
            .expect("zero"),
        _ => {
            let others: Vec<Vec<u8>> = std::fs::read_dir(dir)
                .expect("read dir")
                .map(|e| e.expect("entry").path())
                .filter(|p| p != last && p.extension().is_some_and(|x| x == "rlog" || x == "spare"))
                .map(|p| std::fs::read(p).expect("read other"))
                .collect();
            let mut stale = vec![0u8; (end - at) as usize];
            for other in &others {
                let from = (at as usize).min(other.len());
                let to = (end as usize).min(other.len());
                stale[..to - from].copy_from_slice(&other[from..to]);
            }
            f.write_all_at(&stale, at).expect("stale");
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0u32..6;
    prop_oneof![
        8 => (p.clone(), 1u64..6, MIN_PAYLOAD..3000).prop_map(|(p, n, len)| Op::Append { p, n, len }),
        2 => (p.clone(), 0u64..4).prop_map(|(p, back)| Op::Truncate { p, back }),
        2 => (p.clone(), 0u64..8).prop_map(|(p, fwd)| Op::Purge { p, fwd }),
        2 => (p.clone(), 0u64..8).prop_map(|(p, fwd)| Op::Compact { p, fwd }),
        1 => (p, any::<u8>()).prop_map(|(p, v)| Op::Vote { p, v }),
        2 => Just(Op::Gc),
        1 => Just(Op::Sync),
        2 => proptest::option::of(0u64..=1000).prop_map(|cut| Op::Crash { cut }),
        1 => Just(Op::Reopen),
    ]
}

fn fsync_mode() -> impl Strategy<Value = FsyncMode> {
    prop_oneof![
        Just(FsyncMode::Always),
        Just(FsyncMode::Batch {
            max_delay: Duration::from_millis(1)
        }),
        Just(FsyncMode::Periodic {
            interval: Duration::from_millis(3)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        partitions in 1u32..=6,
        fsync in fsync_mode(),
        max_files in 1usize..4,
        spare_files in 0usize..3,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = RaftLogOptions {
            file_bytes: 4096, fsync, max_files_before_rewrite: max_files, spare_files,
        };
        let log = RaftLog::open(dir.path(), opts).expect("open");
        let mut h = Harness {
            dir, opts, log: Some(log), state: State::new(), history: vec![State::new()],
            floor: 0, acks: Arc::default(), generation: 0,
        };
        for op in ops {
            let op = match op {
                Op::Append { p, n, len } => Op::Append { p: p % partitions, n, len },
                Op::Truncate { p, back } => Op::Truncate { p: p % partitions, back },
                Op::Purge { p, fwd } => Op::Purge { p: p % partitions, fwd },
                Op::Compact { p, fwd } => Op::Compact { p: p % partitions, fwd },
                Op::Vote { p, v } => Op::Vote { p: p % partitions, v },
                other => other,
            };
            h.apply(op);
        }
        h.reopen(None);
    }
}
