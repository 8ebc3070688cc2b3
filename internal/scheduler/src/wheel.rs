//! The timing wheel proper: where an entry goes given its due time and the
//! wheel's now, when a higher-level slot is cascaded down, and how a level-0
//! slot is fired in exact `(due_ms, key)` order.
//!
//! **Placement.** Times are cut into ticks (`floor(ms / tick_ms)`); at level
//! `n` a tick's *level index* is `tick >> n·bits` (bits = log2 slots) and its
//! ring slot is that index modulo `slots`. An entry goes to the lowest level
//! where its level index is less than `slots` ahead of now's; because of
//! that bound no two rotations share a slot. Entries due at or before now go
//! to now's level-0 slot.
//!
//! **Invariants.** At level 0 every entry is `0..slots` level-slots ahead of
//! now; at level `n > 0`, `1..slots` ahead (a level-`n` slot whose start
//! tick is reached is cascaded before anything at that tick fires). Nothing
//! with `due_ms > now_ms` is ever emitted.
//!
//! **Does not own.** The clock (the driver passes `now_ms`), the disk store
//! the near window is loaded from, or what an item means.

use std::cell::Cell;

use crate::config::{Geometry, WheelConfig};
use crate::error::{ConfigError, InsertError};
use crate::store::{EntryStore, NodeId, StoreError, CAPACITY};

/// An entry handed out by [`TimingWheel::advance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired<T> {
    /// The caller's unique id (the event offset).
    pub key: u64,
    /// When the entry was due; never after the `now_ms` it fired at.
    pub due_ms: i64,
    /// The caller's payload.
    pub item: T,
}

/// The next bucket the wheel must act on: cascade it (level > 0) or fire it
/// (level 0) once now reaches `tick`.
#[derive(Debug, Clone, Copy)]
struct Action {
    tick: i64,
    level: usize,
    slot: usize,
}

/// A hierarchical timing wheel over a near window of `horizon_ms`.
///
/// Single-owner (the partition owner's leader term): `&mut self` for every change; the
/// interior `Cell` caching [`Self::next_due_ms`] makes it `Send` but not
/// `Sync`.
#[derive(Debug)]
pub struct TimingWheel<T> {
    geo: Geometry,
    now_ms: i64,
    /// `tick_of(now_ms)`, except inside `advance`, where it walks the ticks
    /// that have work up to the target.
    now_tick: i64,
    store: EntryStore<T>,
    /// Reused by `fire_slot`: `(due_ms, key, node)` of what a slot emits.
    scratch: Vec<(i64, u64, NodeId)>,
    /// `Some(answer)` while the cached earliest due is exact.
    next_due_cache: Cell<Option<Option<i64>>>,
}

impl<T> TimingWheel<T> {
    /// An empty wheel whose now is `now_ms`.
    pub fn new(config: WheelConfig, now_ms: i64) -> Result<Self, ConfigError> {
        let geo = Geometry::new(config)?;
        let store = EntryStore::new(geo.levels, geo.slots);
        Ok(Self {
            now_tick: geo.tick_of(now_ms),
            geo,
            now_ms,
            store,
            scratch: Vec::new(),
            next_due_cache: Cell::new(Some(None)),
        })
    }

    /// Adds an entry. `due_ms` at or before now is accepted and fires on the
    /// next [`Self::advance`] or [`Self::poll`]; it is never returned here.
    ///
    /// Refused, leaving the wheel unchanged: `due_ms > window_end_ms()`
    /// ([`InsertError::BeyondHorizon`] — keep it on disk), a key already in
    /// the wheel ([`InsertError::DuplicateKey`]), or a full slab.
    pub fn insert(&mut self, key: u64, due_ms: i64, item: T) -> Result<(), InsertError> {
        let window_end_ms = self.window_end_ms();
        if due_ms > window_end_ms {
            return Err(InsertError::BeyondHorizon {
                key,
                due_ms,
                window_end_ms,
            });
        }
        let (level, slot) = self.place(due_ms);
        self.store
            .insert(key, due_ms, item, level, slot)
            .map_err(|e| match e {
                StoreError::DuplicateKey => InsertError::DuplicateKey { key },
                StoreError::Full => InsertError::Full { capacity: CAPACITY },
            })?;
        if let Some(cached) = self.next_due_cache.get() {
            let earliest = cached.map_or(due_ms, |d| d.min(due_ms));
            self.next_due_cache.set(Some(Some(earliest)));
        }
        Ok(())
    }

    /// Removes the entry with `key` and returns its item; `None` if it is
    /// not in the wheel (never inserted, already fired or cancelled).
    pub fn cancel(&mut self, key: u64) -> Option<T> {
        let (due_ms, item) = self.store.remove(key)?;
        if self.next_due_cache.get() == Some(Some(due_ms)) {
            // It may have been the earliest; recompute lazily.
            self.next_due_cache.set(None);
        }
        Some(item)
    }

    /// Whether an entry with `key` is in the wheel.
    pub fn contains_key(&self, key: u64) -> bool {
        self.store.contains(key)
    }

    /// Moves now to `now_ms` and appends to `out` every entry with
    /// `due_ms <= now_ms`, each once, in `(due_ms, key)` order. Returns how
    /// many it appended.
    ///
    /// `now_ms` is the driver's fresh clock reading: any jump, however
    /// large, costs one step per non-empty slot, not per tick. A `now_ms`
    /// before the wheel's now is ignored — nothing fires, nothing is lost,
    /// now does not move. Passing the current now fires what is due at it
    /// (see [`Self::poll`]).
    pub fn advance(&mut self, now_ms: i64, out: &mut Vec<Fired<T>>) -> usize {
        if now_ms < self.now_ms {
            tracing::trace!(
                now_ms,
                wheel_now_ms = self.now_ms,
                "timing wheel: clock went backwards; ignored"
            );
            return 0;
        }
        let target_tick = self.geo.tick_of(now_ms);
        let start_len = out.len();
        while let Some(action) = self.next_action() {
            if action.tick > target_tick {
                break;
            }
            debug_assert!(action.tick >= self.now_tick, "wheel time went backwards");
            self.now_tick = action.tick;
            if action.level > 0 {
                self.cascade(action.level, action.slot);
            } else if !self.fire_slot(action.slot, now_ms, start_len, out) {
                // Only the target tick's slot can keep entries (due later
                // within the tick); everything before it is drained.
                debug_assert_eq!(action.tick, target_tick);
                break;
            }
        }
        self.now_ms = now_ms;
        self.now_tick = target_tick;
        debug_assert!(self.upper_levels_ahead(), "a reached slot was not cascaded");
        let fired = out.len() - start_len;
        if fired > 0 {
            self.next_due_cache.set(None);
        }
        fired
    }

    /// Fires what is due at the current now (entries inserted with a due at
    /// or before it since the last advance). Same as `advance(now_ms())`.
    pub fn poll(&mut self, out: &mut Vec<Fired<T>>) -> usize {
        self.advance(self.now_ms, out)
    }

    /// The earliest due time in the wheel, exact (possibly at or before
    /// now, if such an entry was inserted since the last advance). Cached;
    /// a recompute scans the first non-empty slot of each level.
    pub fn next_due_ms(&self) -> Option<i64> {
        if let Some(cached) = self.next_due_cache.get() {
            return cached;
        }
        let earliest = self.compute_next_due_ms();
        self.next_due_cache.set(Some(earliest));
        earliest
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether the wheel holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The latest `now_ms` passed to [`Self::advance`] (or given to
    /// [`Self::new`]); it never decreases.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// The configured near window.
    pub fn horizon_ms(&self) -> i64 {
        self.geo.config.horizon_ms
    }

    /// The configured level-0 slot width.
    pub fn tick_ms(&self) -> i64 {
        self.geo.config.tick_ms
    }

    /// `now_ms + horizon_ms` (saturating): the latest due an insert accepts.
    pub fn window_end_ms(&self) -> i64 {
        self.now_ms.saturating_add(self.geo.config.horizon_ms)
    }

    /// The configuration the wheel was built with.
    pub fn config(&self) -> WheelConfig {
        self.geo.config
    }

    /// Number of levels derived from the configuration.
    pub fn levels(&self) -> usize {
        self.geo.levels
    }

    /// The bucket for `due_ms` relative to the current `now_tick`.
    fn place(&self, due_ms: i64) -> (usize, usize) {
        // Past dues are clamped into now's level-0 slot.
        let due_tick = self.geo.tick_of(due_ms).max(self.now_tick);
        let slots = self.geo.slots as i64;
        for level in 0..self.geo.levels {
            let shift = self.geo.shift(level);
            let ahead = (due_tick >> shift).saturating_sub(self.now_tick >> shift);
            if ahead < slots {
                debug_assert!(level == 0 || ahead > 0);
                return (level, self.geo.ring_slot(due_tick >> shift));
            }
        }
        // Unreachable for dues within the horizon (see `levels_for`). Should
        // it ever happen, the furthest top-level slot is safe: the entry is
        // cascaded (re-placed) when that slot starts, never fired from there.
        debug_assert!(false, "due_ms {due_ms} does not fit the wheel");
        let top = self.geo.levels - 1;
        let now_index = self.now_tick >> self.geo.shift(top);
        (top, self.geo.ring_slot(now_index + slots - 1))
    }

    /// The earliest non-empty bucket's start tick; on a tie the higher
    /// level wins, so a cascade lands its entries before their tick fires.
    fn next_action(&self) -> Option<Action> {
        let mut best: Option<Action> = None;
        for level in (0..self.geo.levels).rev() {
            let shift = self.geo.shift(level);
            let now_index = self.now_tick >> shift;
            let from = self.geo.ring_slot(now_index);
            let Some(distance) = self.store.distance_to_next(level, from) else {
                continue;
            };
            // Distance 0 above level 0 happens only inside `advance`, when
            // several levels' slots start at the same tick.
            let tick = (now_index + distance as i64) << shift;
            if best.is_none_or(|b| tick < b.tick) {
                let slot = (from + distance) % self.geo.slots;
                best = Some(Action { tick, level, slot });
            }
        }
        best
    }

    /// Re-places every entry of a higher-level slot whose start tick now has
    /// reached; each lands on a lower level (or the same tick's level 0).
    fn cascade(&mut self, level: usize, slot: usize) {
        debug_assert!(level > 0);
        let ids = self.store.detach(level, slot);
        for &id in &ids {
            let (_, due_ms) = self.store.key_due(id);
            let (to_level, to_slot) = self.place(due_ms);
            debug_assert!(to_level < level, "cascade must move entries down");
            self.store.link(id, to_level, to_slot);
        }
        self.store.restore(level, slot, ids);
    }

    /// Emits the entries of level-0 `slot` due at or before `target_ms`, in
    /// `(due_ms, key)` order. Returns whether the slot is now empty.
    fn fire_slot(
        &mut self,
        slot: usize,
        target_ms: i64,
        start_len: usize,
        out: &mut Vec<Fired<T>>,
    ) -> bool {
        let mut due = std::mem::take(&mut self.scratch);
        due.clear();
        let ids = self.store.bucket(0, slot);
        due.extend(ids.iter().filter_map(|&id| {
            let (key, due_ms) = self.store.key_due(id);
            (due_ms <= target_ms).then_some((due_ms, key, id))
        }));
        // The common case empties the slot: drop it as a whole rather than
        // entry by entry.
        let whole = due.len() == ids.len();
        let detached = whole.then(|| self.store.detach(0, slot));
        due.sort_unstable();
        for &(due_ms, key, id) in &due {
            debug_assert!(due_ms <= target_ms, "key {key} fired early");
            debug_assert!(
                out.len() == start_len
                    || out
                        .last()
                        .is_some_and(|l| (l.due_ms, l.key) < (due_ms, key)),
                "key {key} emitted out of (due_ms, key) order"
            );
            let item = if whole {
                self.store.free_detached(id)
            } else {
                self.store.remove_at(id)
            };
            out.push(Fired { key, due_ms, item });
        }
        if let Some(ids) = detached {
            self.store.restore(0, slot, ids);
        }
        self.scratch = due;
        whole
    }

    /// Invariant between calls: every non-empty slot above level 0 starts
    /// after now.
    fn upper_levels_ahead(&self) -> bool {
        (1..self.geo.levels).all(|level| {
            let from = self.geo.ring_slot(self.now_tick >> self.geo.shift(level));
            self.store.distance_to_next(level, from) != Some(0)
        })
    }

    fn compute_next_due_ms(&self) -> Option<i64> {
        let mut earliest: Option<i64> = None;
        for level in 0..self.geo.levels {
            let shift = self.geo.shift(level);
            let now_index = self.now_tick >> shift;
            let from = self.geo.ring_slot(now_index);
            let Some(distance) = self.store.distance_to_next(level, from) else {
                continue;
            };
            // Everything at level > 0 is due at or after its slot's start.
            let start_ms =
                ((now_index + distance as i64) << shift).saturating_mul(self.geo.config.tick_ms);
            if level > 0 && earliest.is_some_and(|e| e <= start_ms) {
                continue;
            }
            let slot = (from + distance) % self.geo.slots;
            let slot_min = self
                .store
                .bucket(level, slot)
                .iter()
                .map(|&id| self.store.key_due(id).1)
                .min();
            earliest = match (earliest, slot_min) {
                (Some(e), Some(m)) => Some(e.min(m)),
                (e, m) => e.or(m),
            };
        }
        earliest
    }
}

#[cfg(test)]
mod tests;
