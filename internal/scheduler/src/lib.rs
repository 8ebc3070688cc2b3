//! `chronos-scheduler`: the hierarchical timing wheel that fires a
//! partition's pending events when they are due.
//!
//! **What it owns.** The *near window* of one partition's pending events:
//! entries `(key, due_ms, item)` due no later than `now_ms + horizon_ms`,
//! handed out by [`TimingWheel::advance`] once due. RAM grows with the near
//! window, not with the total pending count.
//! - *Levels* (`wheel.rs`): level 0 has `slots` buckets of `tick_ms`; each
//!   higher level's slot spans `slots` slots of the level below; there are
//!   just enough levels to hold the horizon. Entries cascade down as now
//!   reaches their slot.
//! - *Occupancy* (`occupancy.rs`): a bitmap per level, so advancing over a
//!   long stretch of empty time (hours) costs one step per non-empty slot.
//! - *Storage* (`store.rs`): a slab of nodes in intrusive per-slot lists
//!   plus a key → node index: O(1) insert and cancel, no allocation in
//!   steady state.
//!
//! - *Step guard* (`step_guard.rs`): what time the driver should pass when
//!   the wall clock has just jumped ahead (not the jumped one, for a while).
//!
//! **What it does not do.** It does not read a clock: the driver passes
//! `now_ms` (Unix epoch ms), computed fresh from its clock on each call so
//! there is no tick counting to drift. It does not load or persist events:
//! the leader fills the window from the due-ordered `pending` store by range
//! scans, and keeps anything beyond [`TimingWheel::window_end_ms`] on disk.
//! It does not deliver; fired entries go to the caller.
//!
//! **Invariants.**
//! - **Never early**: nothing with `due_ms > now_ms` is emitted.
//! - **Exactly once, in order**: each entry is emitted once, and one
//!   `advance` emits in `(due_ms, key)` order — also within a slot when
//!   `tick_ms > 1`, and for dues inserted in the past.
//! - **Now never moves backwards**: a `now_ms` behind the wheel's is
//!   ignored; nothing fires, nothing is lost.

mod config;
mod error;
mod occupancy;
mod step_guard;
mod store;
mod wheel;

pub use config::{WheelConfig, DEFAULT_HORIZON_MS, DEFAULT_SLOTS, DEFAULT_TICK_MS, MAX_SLOTS};
pub use error::{ConfigError, InsertError};
pub use step_guard::{StepGuard, DISTRUST_FOR, STEP_TOLERANCE_MS};
pub use wheel::{Fired, TimingWheel};
