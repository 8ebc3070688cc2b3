//! The in-memory index: per partition, where each held entry's record sits
//! (never the payload), plus the vote and purge point. `PartitionState` is the
//! live form; `ReplayPartition` is the tolerant form recovery builds before
//! checking contiguity.

use std::collections::{BTreeMap, VecDeque};

use crate::codec::{Kind, Record};

/// Where one record sits: file, offset of the record, total record bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) file_seq: u64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// Everything the log holds for one partition.
#[derive(Debug, Default)]
pub(crate) struct PartitionState {
    /// Index of `locs[0]`; meaningless while `locs` is empty.
    pub(crate) first: u64,
    pub(crate) locs: VecDeque<Loc>,
    pub(crate) vote: Option<Vec<u8>>,
    pub(crate) purged: Option<(u64, Vec<u8>)>,
}

impl PartitionState {
    pub(crate) fn range(&self) -> Option<(u64, u64)> {
        if self.locs.is_empty() {
            return None;
        }
        Some((self.first, self.first + self.locs.len() as u64 - 1))
    }

    /// Holds nothing at all: no entries, vote or purge point.
    pub(crate) fn is_blank(&self) -> bool {
        self.locs.is_empty() && self.vote.is_none() && self.purged.is_none()
    }

    /// The index the next append must start at; `None` means any index.
    pub(crate) fn next_index(&self) -> Option<u64> {
        match (self.range(), &self.purged) {
            (Some((_, last)), _) => Some(last + 1),
            (None, Some((upto, _))) => Some(upto.saturating_add(1)),
            (None, None) => None,
        }
    }

    pub(crate) fn push(&mut self, index: u64, loc: Loc) {
        if self.locs.is_empty() {
            self.first = index;
        }
        // Callers validated the batch; a gap here would lose entries silently.
        assert_eq!(
            index,
            self.first + self.locs.len() as u64,
            "entry index must continue the partition's log"
        );
        self.locs.push_back(loc);
    }

    /// Drops entries >= `from`.
    pub(crate) fn truncate(&mut self, from: u64) {
        let keep = from.saturating_sub(self.first);
        if keep < self.locs.len() as u64 {
            self.locs.truncate(keep as usize);
        }
    }

    /// Drops entries <= `upto` and records the purge point.
    pub(crate) fn purge(&mut self, upto: u64, meta: Vec<u8>) {
        if let Some((_, last)) = self.range() {
            if upto >= last {
                self.locs.clear();
            } else if upto >= self.first {
                let drop = (upto - self.first + 1) as usize;
                self.locs.drain(..drop);
                self.first = upto + 1;
            }
        }
        self.purged = Some((upto, meta));
    }

    /// Drops every entry and the purge point; the vote stays.
    pub(crate) fn forget(&mut self) {
        self.locs.clear();
        self.purged = None;
    }

    pub(crate) fn loc(&self, index: u64) -> Option<Loc> {
        let offset = index.checked_sub(self.first)?;
        self.locs.get(usize::try_from(offset).ok()?).copied()
    }

    /// Oldest file holding one of this partition's entries.
    pub(crate) fn min_file(&self) -> Option<u64> {
        self.locs.iter().map(|l| l.file_seq).min()
    }
}

/// A partition as replay sees it: entries may arrive out of order (gc
/// rewrites of low indexes come after newer entries).
#[derive(Debug, Default)]
pub(crate) struct ReplayPartition {
    entries: BTreeMap<u64, Loc>,
    vote: Option<Vec<u8>>,
    purged: Option<(u64, Vec<u8>)>,
}

impl ReplayPartition {
    pub(crate) fn apply(&mut self, record: &Record<'_>, loc: Loc) {
        match record.kind {
            // An entry at or below the last one replaces the tail from there
            // (an implicit truncate; the API demands an explicit one first).
            Kind::Entry => {
                self.entries.split_off(&record.index);
                self.entries.insert(record.index, loc);
            }
            // The original may be gone (deleted file) or still here (crash
            // before deletion): either way this copy is the one to keep.
            Kind::Rewrite => {
                self.entries.insert(record.index, loc);
            }
            Kind::Truncate => {
                self.entries.split_off(&record.index);
            }
            Kind::Purge => {
                self.entries = match record.index.checked_add(1) {
                    Some(next) => self.entries.split_off(&next),
                    None => BTreeMap::new(),
                };
                self.purged = Some((record.index, record.body.to_vec()));
            }
            Kind::Vote => self.vote = Some(record.body.to_vec()),
            Kind::Forget => {
                self.entries.clear();
                self.purged = None;
            }
            // Ends its file's scan; recovery never passes it here.
            Kind::Seal => {}
        }
    }

    /// The live form. Panics if the entries have a gap: the log would
    /// otherwise hand Raft a log with a hole in it.
    pub(crate) fn finish(self, partition: u32) -> PartitionState {
        let mut state = PartitionState {
            vote: self.vote,
            purged: self.purged,
            ..PartitionState::default()
        };
        for (index, loc) in self.entries {
            if let Some((_, last)) = state.range() {
                assert_eq!(
                    index,
                    last + 1,
                    "partition {partition}: recovered entries are not contiguous"
                );
            }
            state.push(index, loc);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(n: u64) -> Loc {
        Loc {
            file_seq: n,
            offset: n,
            len: 1,
        }
    }

    #[test]
    fn truncate_purge_and_next_index() {
        let mut p = PartitionState::default();
        assert_eq!(p.next_index(), None);
        for i in 5..=10 {
            p.push(i, loc(i));
        }
        assert_eq!(p.range(), Some((5, 10)));
        p.truncate(8);
        assert_eq!(p.range(), Some((5, 7)));
        p.truncate(100);
        assert_eq!(p.range(), Some((5, 7)));
        p.purge(5, vec![1]);
        assert_eq!(p.range(), Some((6, 7)));
        assert_eq!(p.loc(6), Some(loc(6)));
        assert_eq!(p.loc(5), None);
        p.purge(20, vec![2]);
        assert_eq!(p.range(), None);
        assert_eq!(p.next_index(), Some(21));
        p.truncate(0);
        assert!(!p.is_blank());
    }

    #[test]
    fn replay_rewrite_fills_below() {
        let mut r = ReplayPartition::default();
        let rec = |kind, index| Record {
            kind,
            partition: 1,
            index,
            body: &[],
        };
        for i in 11..=20 {
            r.apply(&rec(Kind::Entry, i), loc(1));
        }
        for i in 1..=10 {
            r.apply(&rec(Kind::Rewrite, i), loc(2));
        }
        r.apply(&rec(Kind::Entry, 15), loc(3));
        let s = r.finish(1);
        assert_eq!(s.range(), Some((1, 15)));
        assert_eq!(s.loc(15), Some(loc(3)));
    }
}
