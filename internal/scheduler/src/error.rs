//! The crate's error types: why a wheel could not be built, why an entry
//! was refused. Nothing here panics; every refusal is a value the caller
//! can act on (e.g. keep a beyond-horizon event on disk).

/// Why [`crate::TimingWheel::new`] refused a [`crate::WheelConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `tick_ms` must be at least 1.
    #[error("tick_ms must be >= 1, got {tick_ms}")]
    TickNotPositive {
        /// The configured tick.
        tick_ms: i64,
    },
    /// `slots` must be a power of two in `2..=MAX_SLOTS`.
    #[error(
        "slots must be a power of two in 2..={}, got {slots}",
        crate::MAX_SLOTS
    )]
    BadSlotCount {
        /// The configured slot count.
        slots: u32,
    },
    /// `horizon_ms` must not be negative.
    #[error("horizon_ms must be >= 0, got {horizon_ms}")]
    NegativeHorizon {
        /// The configured horizon.
        horizon_ms: i64,
    },
    /// The horizon needs more levels than 64-bit tick arithmetic allows.
    #[error("horizon_ms {horizon_ms} is too large for this tick and slot count")]
    HorizonTooLarge {
        /// The configured horizon.
        horizon_ms: i64,
    },
}

/// Why [`crate::TimingWheel::insert`] refused an entry. The wheel is
/// unchanged after any of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// An entry with this key is already in the wheel.
    #[error("key {key} is already in the wheel")]
    DuplicateKey {
        /// The refused key.
        key: u64,
    },
    /// The entry is due after the wheel's window end; it belongs on disk
    /// until the window reaches it.
    #[error("key {key} due at {due_ms} ms is beyond the window end {window_end_ms} ms")]
    BeyondHorizon {
        /// The refused key.
        key: u64,
        /// Its due time.
        due_ms: i64,
        /// `now_ms + horizon_ms` at the time of the call.
        window_end_ms: i64,
    },
    /// The wheel holds as many entries as its 32-bit slab can address.
    #[error("wheel is full ({capacity} entries)")]
    Full {
        /// The entry limit.
        capacity: usize,
    },
}
