//! Wheel configuration and the geometry derived from it.
//!
//! **Owns.** Validation of [`WheelConfig`] and the arithmetic that turns a
//! tick, a slot count and a horizon into levels: how many levels there are,
//! how many ticks a slot of each level spans, and which tick a time falls in.
//!
//! **Does not own.** Any entry or any notion of "now"; that is the wheel's.

use crate::error::ConfigError;

/// Default level-0 slot width.
pub const DEFAULT_TICK_MS: i64 = 1;
/// Default number of slots per level.
pub const DEFAULT_SLOTS: u32 = 256;
/// Default near window: how far past `now_ms` an entry may be due.
pub const DEFAULT_HORIZON_MS: i64 = 60_000;
/// Largest accepted slot count per level.
pub const MAX_SLOTS: u32 = 4096;

/// Shape of a [`crate::TimingWheel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelConfig {
    /// Width of one level-0 slot. Entries within one tick are still emitted
    /// in exact `(due_ms, key)` order; a coarser tick only means fewer,
    /// fuller slots. Must be ≥ 1.
    pub tick_ms: i64,
    /// Slots per level; a power of two in `2..=MAX_SLOTS`. Level `n` slots
    /// span `tick_ms * slots^n`.
    pub slots: u32,
    /// Inserts due after `now_ms + horizon_ms` are refused. The level count
    /// is derived from it. Must be ≥ 0.
    pub horizon_ms: i64,
}

impl Default for WheelConfig {
    fn default() -> Self {
        Self {
            tick_ms: DEFAULT_TICK_MS,
            slots: DEFAULT_SLOTS,
            horizon_ms: DEFAULT_HORIZON_MS,
        }
    }
}

/// Validated, derived numbers. Ticks are `floor(ms / tick_ms)`, so tick
/// arithmetic is plain integer arithmetic (arithmetic shifts floor, also for
/// times before the epoch).
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    pub(crate) config: WheelConfig,
    /// log2(slots).
    slot_bits: u32,
    /// Slots per level.
    pub(crate) slots: usize,
    /// `slots - 1`, for slot = index & mask.
    mask: i64,
    /// Number of levels (≥ 1).
    pub(crate) levels: usize,
}

impl Geometry {
    pub(crate) fn new(config: WheelConfig) -> Result<Self, ConfigError> {
        if config.tick_ms < 1 {
            return Err(ConfigError::TickNotPositive {
                tick_ms: config.tick_ms,
            });
        }
        if !config.slots.is_power_of_two() || !(2..=MAX_SLOTS).contains(&config.slots) {
            return Err(ConfigError::BadSlotCount {
                slots: config.slots,
            });
        }
        if config.horizon_ms < 0 {
            return Err(ConfigError::NegativeHorizon {
                horizon_ms: config.horizon_ms,
            });
        }
        let slot_bits = config.slots.trailing_zeros();
        let levels = levels_for(config, slot_bits).ok_or(ConfigError::HorizonTooLarge {
            horizon_ms: config.horizon_ms,
        })?;
        Ok(Self {
            config,
            slot_bits,
            slots: config.slots as usize,
            mask: i64::from(config.slots) - 1,
            levels,
        })
    }

    /// The tick `ms` falls in.
    pub(crate) fn tick_of(&self, ms: i64) -> i64 {
        ms.div_euclid(self.config.tick_ms)
    }

    /// How far to shift a tick right to get its slot index at `level`.
    pub(crate) fn shift(&self, level: usize) -> u32 {
        debug_assert!(level < self.levels);
        // levels_for bounds slot_bits * (levels - 1) by 62.
        self.slot_bits * level as u32
    }

    /// Ring position of a level index (an absolute slot number at a level).
    pub(crate) fn ring_slot(&self, level_index: i64) -> usize {
        (level_index & self.mask) as usize
    }
}

/// The fewest levels such that every tick due within the horizon lands less
/// than `slots` level-slots ahead of now at the top level.
///
/// With `now_ms ≤ due_ms ≤ now_ms + horizon_ms`, the tick distance is at most
/// `D = horizon_ms / tick_ms + 1`, and at level `n` the level-slot distance
/// is at most `(D >> n·bits) + 1`. Requiring that to be `< slots` gives
/// `(D >> n·bits) ≤ slots - 2`. `None` if no level up to shift 62 does it.
fn levels_for(config: WheelConfig, slot_bits: u32) -> Option<usize> {
    let max_distance_ticks = (config.horizon_ms / config.tick_ms).checked_add(1)?;
    let limit = i64::from(config.slots) - 2;
    let mut level = 0u32;
    loop {
        let shift = slot_bits.checked_mul(level)?;
        if shift > 62 {
            return None;
        }
        if (max_distance_ticks >> shift) <= limit {
            return Some(level as usize + 1);
        }
        level += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(tick_ms: i64, slots: u32, horizon_ms: i64) -> Result<Geometry, ConfigError> {
        Geometry::new(WheelConfig {
            tick_ms,
            slots,
            horizon_ms,
        })
    }

    #[test]
    fn default_needs_two_levels() {
        let g = Geometry::new(WheelConfig::default()).expect("valid");
        // 60 001 ticks >> 8 = 234 ≤ 254: level 1 reaches it.
        assert_eq!(g.levels, 2);
        assert_eq!(g.shift(1), 8);
    }

    #[test]
    fn level_count_grows_with_horizon() {
        // One level holds distances ≤ 254 ticks (slot distance ≤ 255).
        assert_eq!(geometry(1, 256, 253).map(|g| g.levels), Ok(1));
        assert_eq!(geometry(1, 256, 254).map(|g| g.levels), Ok(2));
        assert_eq!(geometry(10, 256, 2539).map(|g| g.levels), Ok(1));
        assert_eq!(geometry(10, 256, 2540).map(|g| g.levels), Ok(2));
        assert_eq!(geometry(1, 256, 3_600_000).map(|g| g.levels), Ok(3));
        assert_eq!(geometry(1, 2, 0).map(|g| g.levels), Ok(2));
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(matches!(
            geometry(0, 256, 1),
            Err(ConfigError::TickNotPositive { .. })
        ));
        assert!(matches!(
            geometry(1, 100, 1),
            Err(ConfigError::BadSlotCount { .. })
        ));
        assert!(matches!(
            geometry(1, 1, 1),
            Err(ConfigError::BadSlotCount { .. })
        ));
        assert!(matches!(
            geometry(1, 8192, 1),
            Err(ConfigError::BadSlotCount { .. })
        ));
        assert!(matches!(
            geometry(1, 256, -1),
            Err(ConfigError::NegativeHorizon { .. })
        ));
        assert!(matches!(
            geometry(1, 2, i64::MAX),
            Err(ConfigError::HorizonTooLarge { .. })
        ));
        // A huge horizon with wide slots still fits under shift 62.
        assert!(geometry(1, 4096, i64::MAX - 1).is_ok());
    }

    #[test]
    fn ticks_floor_before_the_epoch() {
        let g = geometry(10, 256, 1000).expect("valid");
        assert_eq!(g.tick_of(-1), -1);
        assert_eq!(g.tick_of(-10), -1);
        assert_eq!(g.tick_of(-11), -2);
        assert_eq!(g.tick_of(19), 1);
        assert_eq!(g.ring_slot(-1), 255);
    }
}
