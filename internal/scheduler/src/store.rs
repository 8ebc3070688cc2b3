//! Where entries live: a slab of nodes, one id vector per `(level, slot)`
//! bucket, the per-level occupancy bitmaps that mirror which buckets are
//! non-empty, and the key → node index that makes cancel O(1).
//!
//! **Owns.** Memory and bucket bookkeeping: per entry one node (key, due,
//! bucket, position in the bucket, item), one id in its bucket and one index
//! entry. Freed nodes and emptied bucket vectors are reused, so a
//! steady-state wheel allocates nothing. Buckets are id vectors rather than
//! linked lists because a cascade or a fire then reads its nodes with
//! independent loads instead of chasing pointers.
//!
//! **Does not own.** Time. Which bucket an entry belongs in, and when a
//! bucket is cascaded or fired, is decided by the wheel (`wheel.rs`).

use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use crate::occupancy::Occupancy;

/// A node index in the slab.
pub(crate) type NodeId = u32;

/// Largest number of nodes the slab addresses.
pub(crate) const CAPACITY: usize = u32::MAX as usize;

/// An emptied bucket keeps at most this many ids of capacity, so a burst
/// does not pin memory in every bucket it passed through.
const RETAINED_BUCKET_IDS: usize = 16 * 1024;

#[derive(Debug)]
struct Node<T> {
    key: u64,
    due_ms: i64,
    /// `level * slots + slot` while in a bucket.
    bucket: u32,
    /// Index of this node's id in its bucket vector.
    pos: u32,
    /// `None` only while the node is free.
    item: Option<T>,
}

/// Why the store refused an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreError {
    DuplicateKey,
    Full,
}

#[derive(Debug)]
pub(crate) struct EntryStore<T> {
    nodes: Vec<Node<T>>,
    free: Vec<NodeId>,
    buckets: Vec<Vec<NodeId>>,
    occupancy: Vec<Occupancy>,
    slots: usize,
    index: FxHashMap<u64, NodeId>,
}

impl<T> EntryStore<T> {
    pub(crate) fn new(levels: usize, slots: usize) -> Self {
        Self {
            nodes: Vec::new(),
            free: Vec::new(),
            buckets: (0..levels * slots).map(|_| Vec::new()).collect(),
            occupancy: (0..levels).map(|_| Occupancy::new(slots)).collect(),
            slots,
            index: FxHashMap::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        debug_assert_eq!(self.index.len() + self.free.len(), self.nodes.len());
        self.index.len()
    }

    pub(crate) fn contains(&self, key: u64) -> bool {
        self.index.contains_key(&key)
    }

    /// Adds an entry to bucket `(level, slot)`.
    pub(crate) fn insert(
        &mut self,
        key: u64,
        due_ms: i64,
        item: T,
        level: usize,
        slot: usize,
    ) -> Result<(), StoreError> {
        let vacant = match self.index.entry(key) {
            Entry::Occupied(_) => return Err(StoreError::DuplicateKey),
            Entry::Vacant(v) => v,
        };
        let node = Node {
            key,
            due_ms,
            bucket: 0,
            pos: 0,
            item: Some(item),
        };
        let id = match self.free.pop() {
            Some(id) => {
                debug_assert!(self.nodes[id as usize].item.is_none());
                self.nodes[id as usize] = node;
                id
            }
            None if self.nodes.len() >= CAPACITY => return Err(StoreError::Full),
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as NodeId
            }
        };
        vacant.insert(id);
        self.link(id, level, slot);
        Ok(())
    }

    /// Removes the entry with `key`, returning its due time and item.
    pub(crate) fn remove(&mut self, key: u64) -> Option<(i64, T)> {
        let id = *self.index.get(&key)?;
        let due_ms = self.nodes[id as usize].due_ms;
        Some((due_ms, self.remove_at(id)))
    }

    /// Takes a live node out of its bucket, frees it and returns its item.
    pub(crate) fn remove_at(&mut self, id: NodeId) -> T {
        let (bucket, pos) = {
            let node = &self.nodes[id as usize];
            (node.bucket as usize, node.pos as usize)
        };
        let ids = &mut self.buckets[bucket];
        debug_assert_eq!(ids.get(pos), Some(&id), "node {id} not where it says");
        ids.swap_remove(pos);
        if let Some(&moved) = ids.get(pos) {
            self.nodes[moved as usize].pos = pos as u32;
        }
        if ids.is_empty() {
            self.occupancy[bucket / self.slots].clear(bucket % self.slots);
        }
        self.free_node(id)
    }

    /// Key and due time of a live node.
    pub(crate) fn key_due(&self, id: NodeId) -> (u64, i64) {
        let node = &self.nodes[id as usize];
        (node.key, node.due_ms)
    }

    /// The ids in bucket `(level, slot)`, in no particular order.
    pub(crate) fn bucket(&self, level: usize, slot: usize) -> &[NodeId] {
        &self.buckets[self.bucket_index(level, slot)]
    }

    /// Distance from `from` to the next non-empty slot of `level`.
    pub(crate) fn distance_to_next(&self, level: usize, from: usize) -> Option<usize> {
        self.occupancy[level].distance_to_next(from)
    }

    /// Empties bucket `(level, slot)` and returns its ids. The nodes stay
    /// live: each must be [`Self::link`]ed again or
    /// [`Self::free_detached`]; then hand the vector back with
    /// [`Self::restore`] so its allocation is reused.
    pub(crate) fn detach(&mut self, level: usize, slot: usize) -> Vec<NodeId> {
        let bucket = self.bucket_index(level, slot);
        self.occupancy[level].clear(slot);
        std::mem::take(&mut self.buckets[bucket])
    }

    /// Returns a vector from [`Self::detach`] to bucket `(level, slot)` for
    /// reuse, if that bucket is still empty.
    pub(crate) fn restore(&mut self, level: usize, slot: usize, mut ids: Vec<NodeId>) {
        let bucket = self.bucket_index(level, slot);
        if self.buckets[bucket].is_empty() {
            ids.clear();
            ids.shrink_to(RETAINED_BUCKET_IDS);
            self.buckets[bucket] = ids;
        }
    }

    /// Frees a detached node and returns its item.
    pub(crate) fn free_detached(&mut self, id: NodeId) -> T {
        self.free_node(id)
    }

    /// Adds a live node that is in no bucket (new or detached) to a bucket.
    pub(crate) fn link(&mut self, id: NodeId, level: usize, slot: usize) {
        let bucket = self.bucket_index(level, slot);
        let ids = &mut self.buckets[bucket];
        let node = &mut self.nodes[id as usize];
        debug_assert!(node.item.is_some(), "linking free node {id}");
        node.bucket = bucket as u32;
        node.pos = ids.len() as u32;
        ids.push(id);
        self.occupancy[level].set(slot);
    }

    fn free_node(&mut self, id: NodeId) -> T {
        let node = &mut self.nodes[id as usize];
        let removed = self.index.remove(&node.key);
        debug_assert_eq!(removed, Some(id));
        self.free.push(id);
        match node.item.take() {
            Some(item) => item,
            // Unreachable: ids come from the index or a bucket, which only
            // hold live nodes, and a node is freed once.
            None => unreachable!("node {id} freed twice"),
        }
    }

    fn bucket_index(&self, level: usize, slot: usize) -> usize {
        debug_assert!(slot < self.slots && level < self.occupancy.len());
        level * self.slots + slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_in<T>(store: &EntryStore<T>, level: usize, slot: usize) -> Vec<u64> {
        let mut keys: Vec<u64> = store
            .bucket(level, slot)
            .iter()
            .map(|&id| store.key_due(id).0)
            .collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn insert_remove_reuses_nodes() {
        let mut store = EntryStore::new(2, 8);
        store.insert(1, 10, "a", 0, 3).expect("insert");
        store.insert(2, 11, "b", 0, 3).expect("insert");
        store.insert(3, 12, "c", 1, 0).expect("insert");
        assert_eq!(
            store.insert(2, 99, "x", 0, 0),
            Err(StoreError::DuplicateKey)
        );
        assert_eq!(keys_in(&store, 0, 3), vec![1, 2]);
        assert_eq!(store.distance_to_next(0, 4), Some(7));
        assert_eq!(store.remove(1), Some((10, "a")));
        assert_eq!(store.remove(1), None);
        assert_eq!(keys_in(&store, 0, 3), vec![2]);
        assert_eq!(store.remove(2), Some((11, "b")));
        assert_eq!(store.distance_to_next(0, 0), None);
        store.insert(4, 13, "d", 0, 5).expect("insert");
        assert_eq!(store.nodes.len(), 3, "freed nodes are reused");
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn remove_first_middle_and_last_keeps_positions() {
        let mut store = EntryStore::new(1, 4);
        for key in 1..=5 {
            store.insert(key, 0, key, 0, 1).expect("insert");
        }
        assert_eq!(store.remove(1), Some((0, 1))); // first: 5 moves into it
        assert_eq!(store.remove(3), Some((0, 3))); // middle: 4 moves
        assert_eq!(store.remove(4), Some((0, 4))); // moved node, now last
        assert_eq!(keys_in(&store, 0, 1), vec![2, 5]);
        assert_eq!(store.remove(5), Some((0, 5)));
        assert_eq!(store.remove(2), Some((0, 2)));
        assert_eq!(store.distance_to_next(0, 0), None);
    }

    #[test]
    fn detach_relink_and_free_detached() {
        let mut store = EntryStore::new(2, 4);
        for key in 1..=3 {
            store.insert(key, 0, key, 1, 2).expect("insert");
        }
        let ids = store.detach(1, 2);
        assert_eq!(store.distance_to_next(1, 0), None);
        for &id in &ids {
            match store.key_due(id).0 {
                2 => assert_eq!(store.free_detached(id), 2),
                key => store.link(id, 0, key as usize),
            }
        }
        store.restore(1, 2, ids);
        assert!(store.bucket(1, 2).is_empty());
        assert_eq!(keys_in(&store, 0, 1), vec![1]);
        assert_eq!(keys_in(&store, 0, 3), vec![3]);
        assert_eq!(store.remove(2), None);
        assert_eq!(store.remove(3), Some((0, 3)));
        assert_eq!(store.len(), 1);
    }
}
