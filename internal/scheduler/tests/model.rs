//! Model test: the wheel against a sorted map keyed by `(due_ms, key)`.
//!
//! Geometries are drawn from every valid shape (any tick, any power-of-two
//! slot count, horizons needing one to four levels, and tiny horizons).
//! Operations are random inserts (dues in the past, near now, on level-slot
//! boundaries where cascades happen, anywhere in the window and just beyond
//! it; keys from a small range so duplicates happen), cancels (existing and
//! unknown keys) and advances (small steps, level-sized steps, steps past the
//! horizon, jumps of hours to decades, backwards readings).
//!
//! After every operation the wheel must agree with the model on the result,
//! `len` and `next_due_ms`. Every advance must fire exactly what the model
//! pops, in the documented `(due_ms, key)` order, nothing early and — on a
//! forward clock — nothing due left behind. A ledger kept apart from the
//! model checks that every accepted entry ends cancelled or fired exactly
//! once.

use std::collections::{BTreeMap, HashMap};

use chronos_scheduler::{Fired, InsertError, TimingWheel, WheelConfig};
use proptest::prelude::*;

/// Largest level span a drawn geometry covers: keeps every sum of nows,
/// horizons and steps in a case far from `i64` overflow.
const MAX_SPAN_MS: i64 = 1 << 40;

/// When an inserted entry is due, resolved against now at the time.
#[derive(Debug, Clone)]
enum Due {
    /// `offset_ms` after now (negative: in the past).
    Offset(i64),
    /// `delta_ms` from the start of the level-`level` slot `ahead` slots
    /// after now's: the times at which that level cascades. `level` is
    /// taken modulo the wheel's level count.
    Boundary {
        level: u32,
        ahead: i64,
        delta_ms: i64,
    },
}

#[derive(Debug, Clone)]
enum Op {
    Insert {
        key: u64,
        due: Due,
    },
    Cancel {
        key: u64,
    },
    /// Advance by `step_ms` (negative: a backwards clock reading).
    Advance {
        step_ms: i64,
    },
}

/// The item stored for an insert: its key and which insert stored it, so
/// swapped items are caught and not just swapped keys.
type Item = (u64, usize);

/// Reference: pending entries sorted by `(due_ms, key)`.
#[derive(Default)]
struct Model {
    now_ms: i64,
    horizon_ms: i64,
    by_due: BTreeMap<(i64, u64), Item>,
    due_of: HashMap<u64, i64>,
}

impl Model {
    fn insert(&mut self, key: u64, due_ms: i64, item: Item) -> Result<(), InsertError> {
        let window_end_ms = self.now_ms + self.horizon_ms;
        if due_ms > window_end_ms {
            return Err(InsertError::BeyondHorizon {
                key,
                due_ms,
                window_end_ms,
            });
        }
        if self.due_of.contains_key(&key) {
            return Err(InsertError::DuplicateKey { key });
        }
        self.due_of.insert(key, due_ms);
        self.by_due.insert((due_ms, key), item);
        Ok(())
    }

    fn cancel(&mut self, key: u64) -> Option<Item> {
        let due_ms = self.due_of.remove(&key)?;
        self.by_due.remove(&(due_ms, key))
    }

    fn advance(&mut self, now_ms: i64) -> Vec<Fired<Item>> {
        if now_ms < self.now_ms {
            return Vec::new();
        }
        self.now_ms = now_ms;
        let mut fired = Vec::new();
        while let Some(entry) = self.by_due.first_entry() {
            let (due_ms, key) = *entry.key();
            if due_ms > now_ms {
                break;
            }
            let item = entry.remove();
            self.due_of.remove(&key);
            fired.push(Fired { key, due_ms, item });
        }
        fired
    }

    fn next_due_ms(&self) -> Option<i64> {
        self.by_due.keys().next().map(|&(due_ms, _)| due_ms)
    }
}

/// What became of an accepted insert, tracked without the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pending,
    Cancelled,
    Fired,
}

/// A wheel and the model driven in lockstep, plus the ledger of fates by
/// insert sequence number.
struct Harness {
    wheel: TimingWheel<Item>,
    model: Model,
    ledger: HashMap<usize, Fate>,
    inserts: usize,
}

impl Harness {
    fn new(config: WheelConfig, start_ms: i64) -> Result<Self, TestCaseError> {
        let wheel = TimingWheel::new(config, start_ms)
            .map_err(|e| TestCaseError::fail(format!("config {config:?}: {e}")))?;
        let model = Model {
            now_ms: start_ms,
            horizon_ms: config.horizon_ms,
            ..Model::default()
        };
        Ok(Self {
            wheel,
            model,
            ledger: HashMap::new(),
            inserts: 0,
        })
    }

    /// Applies `op` to both sides and checks that they still agree.
    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Insert { key, due } => {
                let due_ms = self.resolve(due);
                let item = (*key, self.inserts);
                self.inserts += 1;
                let expect = self.model.insert(*key, due_ms, item);
                let got = self.wheel.insert(*key, due_ms, item);
                prop_assert_eq!(got, expect, "insert {} due {}", key, due_ms);
                if got.is_ok() {
                    self.ledger.insert(item.1, Fate::Pending);
                }
            }
            Op::Cancel { key } => {
                let got = self.wheel.cancel(*key);
                prop_assert_eq!(got, self.model.cancel(*key), "cancel {}", key);
                if let Some((_, seq)) = got {
                    let fate = self.ledger.insert(seq, Fate::Cancelled);
                    prop_assert_eq!(fate, Some(Fate::Pending), "cancelled insert {}", seq);
                }
            }
            Op::Advance { step_ms } => {
                self.advance(self.model.now_ms + step_ms)?;
            }
        }
        self.check_agree()
    }

    /// Advances both sides to `now_ms`; checks that the wheel fired exactly
    /// what the model did, in `(due_ms, key)` order, none early, each once,
    /// and (on a forward clock) left nothing due behind. Returns the fired.
    fn advance(&mut self, now_ms: i64) -> Result<Vec<Fired<Item>>, TestCaseError> {
        let forward = now_ms >= self.model.now_ms;
        let expect = self.model.advance(now_ms);
        let mut out = Vec::new();
        let n = self.wheel.advance(now_ms, &mut out);
        prop_assert_eq!(n, out.len());
        prop_assert!(out.iter().all(|f| f.due_ms <= now_ms), "fired early");
        prop_assert!(
            out.windows(2)
                .all(|w| (w[0].due_ms, w[0].key) < (w[1].due_ms, w[1].key)),
            "fired out of (due_ms, key) order"
        );
        prop_assert_eq!(&out, &expect, "advance to {}", now_ms);
        for f in &out {
            let fate = self.ledger.insert(f.item.1, Fate::Fired);
            prop_assert_eq!(fate, Some(Fate::Pending), "fired insert {}", f.item.1);
        }
        if forward {
            let left = self.wheel.next_due_ms();
            prop_assert!(
                left.is_none_or(|due_ms| due_ms > now_ms),
                "due {:?} left behind at {}",
                left,
                now_ms
            );
        }
        self.check_agree()?;
        Ok(out)
    }

    /// Advances past the window end, so everything in the wheel fires, and
    /// checks the ledger: every accepted insert was cancelled or fired once.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        self.advance(self.wheel.window_end_ms())?;
        prop_assert!(self.wheel.is_empty());
        prop_assert_eq!(self.wheel.next_due_ms(), None);
        let pending = self.ledger.values().filter(|&&f| f == Fate::Pending);
        prop_assert_eq!(pending.count(), 0, "entries never fired");
        Ok(())
    }

    /// The wheel and the model agree on now, size and earliest due.
    fn check_agree(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.wheel.now_ms(), self.model.now_ms);
        prop_assert_eq!(self.wheel.len(), self.model.by_due.len());
        prop_assert_eq!(self.wheel.next_due_ms(), self.model.next_due_ms());
        Ok(())
    }

    /// The due time `due` names at the current now.
    fn resolve(&self, due: &Due) -> i64 {
        let now_ms = self.model.now_ms;
        match *due {
            Due::Offset(offset_ms) => now_ms + offset_ms,
            Due::Boundary {
                level,
                ahead,
                delta_ms,
            } => {
                let config = self.wheel.config();
                let level = level % self.wheel.levels() as u32;
                let span_ms = i64::from(config.slots)
                    .checked_pow(level)
                    .and_then(|slots| slots.checked_mul(config.tick_ms))
                    .unwrap_or(i64::MAX);
                (now_ms.div_euclid(span_ms) + ahead)
                    .saturating_mul(span_ms)
                    .saturating_add(delta_ms)
            }
        }
    }
}

/// Valid geometries (tick ≥ 1; slots a power of two in `2..=4096`; horizon
/// ≥ 0). Mostly the horizon is drawn below what one to four levels of the
/// drawn slots span, so wheels of every depth are common; the rest are tiny
/// horizons (edge cases: a horizon of 0 still needs two levels at 2 slots).
fn config_strategy() -> impl Strategy<Value = WheelConfig> {
    let tick_ms = prop_oneof![3 => Just(1i64), 2 => 2i64..=10, 1 => 11i64..=1_000];
    let slot_bits = prop_oneof![3 => 1u32..=3, 2 => 4u32..=8, 1 => 9u32..=12];
    (tick_ms, slot_bits, 1u32..=4)
        .prop_flat_map(|(tick_ms, slot_bits, levels)| {
            let span_ms = tick_ms
                .checked_shl(slot_bits * levels)
                .filter(|&span_ms| span_ms <= MAX_SPAN_MS)
                .unwrap_or(MAX_SPAN_MS);
            let horizon_ms = prop_oneof![3 => 0..=span_ms, 1 => 0i64..=20];
            (Just(tick_ms), Just(1u32 << slot_bits), horizon_ms)
        })
        .prop_map(|(tick_ms, slots, horizon_ms)| WheelConfig {
            tick_ms,
            slots,
            horizon_ms,
        })
}

/// Dues: anywhere from a little in the past to a little beyond the window,
/// near now (within two level-1 slots either side), on the window edge and
/// one past it, and on level-slot boundaries ± 1 ms.
fn due_strategy(config: WheelConfig) -> impl Strategy<Value = Due> {
    let horizon_ms = config.horizon_ms;
    let level1_ms = config.tick_ms * i64::from(config.slots);
    prop_oneof![
        6 => (-50i64..=horizon_ms + 20).prop_map(Due::Offset),
        3 => (-2 * level1_ms..=2 * level1_ms).prop_map(Due::Offset),
        1 => (horizon_ms..=horizon_ms + 1).prop_map(Due::Offset),
        3 => (0u32..8, 0i64..=3, -1i64..=1).prop_map(|(level, ahead, delta_ms)| {
            Due::Boundary { level, ahead, delta_ms }
        }),
    ]
}

/// Operations; `big` weights advances toward large steps and jumps.
fn op_strategy(config: WheelConfig, big: bool) -> impl Strategy<Value = Op> {
    let horizon_ms = config.horizon_ms;
    let level1_ms = config.tick_ms * i64::from(config.slots);
    let key = 0u64..96;
    let insert = (key.clone(), due_strategy(config)).prop_map(|(key, due)| Op::Insert { key, due });
    let cancel = key.prop_map(|key| Op::Cancel { key });
    let small = (0i64..=12).prop_map(|step_ms| Op::Advance { step_ms });
    let level = (0i64..=2 * level1_ms).prop_map(|step_ms| Op::Advance { step_ms });
    let large = (0i64..=2 * horizon_ms + 300).prop_map(|step_ms| Op::Advance { step_ms });
    let jump = prop_oneof![
        3 => 3_600_000i64..=86_400_000,
        1 => 86_400_000i64..=1_000_000_000_000_000,
    ]
    .prop_map(|step_ms| Op::Advance { step_ms });
    let back = (-500i64..0).prop_map(|step_ms| Op::Advance { step_ms });
    let (w_small, w_level, w_large, w_jump) = if big { (2, 2, 6, 2) } else { (8, 3, 2, 1) };
    prop_oneof![
        12 => insert,
        3 => cancel,
        w_small => small,
        w_level => level,
        w_large => large,
        w_jump => jump,
        1 => back,
    ]
}

fn start_ms_strategy() -> impl Strategy<Value = i64> {
    -100_000i64..=2_000_000_000_000
}

fn case_strategy(big: bool) -> impl Strategy<Value = (WheelConfig, i64, Vec<Op>)> {
    (config_strategy(), start_ms_strategy()).prop_flat_map(move |(config, start_ms)| {
        let ops = prop::collection::vec(op_strategy(config, big), 1..300);
        (Just(config), Just(start_ms), ops)
    })
}

/// A clock jump of `jump_ms` forward: within the window (some entries stay),
/// just past it, or decades ahead.
fn jump_strategy(horizon_ms: i64) -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => 0..=horizon_ms,
        1 => horizon_ms..=horizon_ms + 100_000_000,
        1 => 100_000_000i64..=1_000_000_000_000_000,
    ]
}

/// A history of operations, then a batch of inserts and cancels, then one
/// forward jump.
#[derive(Debug, Clone)]
struct JumpCase {
    config: WheelConfig,
    start_ms: i64,
    history: Vec<Op>,
    entries: Vec<(u64, Due)>,
    cancels: Vec<u64>,
    jump_ms: i64,
}

fn jump_case_strategy() -> impl Strategy<Value = JumpCase> {
    (config_strategy(), start_ms_strategy()).prop_flat_map(|(config, start_ms)| {
        let history = prop::collection::vec(op_strategy(config, false), 0..60);
        let entries = prop::collection::vec((0u64..1_000, due_strategy(config)), 0..400);
        let cancels = prop::collection::vec(0u64..1_000, 0..40);
        (history, entries, cancels, jump_strategy(config.horizon_ms)).prop_map(
            move |(history, entries, cancels, jump_ms)| JumpCase {
                config,
                start_ms,
                history,
                entries,
                cancels,
                jump_ms,
            },
        )
    })
}

fn run_case(config: WheelConfig, start_ms: i64, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut harness = Harness::new(config, start_ms)?;
    for (seq, op) in ops.iter().enumerate() {
        harness
            .apply(op)
            .map_err(|e| TestCaseError::fail(format!("op {seq} {op:?}: {e}")))?;
    }
    harness.drain()
}

fn run_jump(case: &JumpCase) -> Result<(), TestCaseError> {
    let mut harness = Harness::new(case.config, case.start_ms)?;
    for op in &case.history {
        harness.apply(op)?;
    }
    for (key, due) in &case.entries {
        let (key, due) = (*key, due.clone());
        harness.apply(&Op::Insert { key, due })?;
    }
    for &key in &case.cancels {
        harness.apply(&Op::Cancel { key })?;
    }
    let held = harness.wheel.len();
    let now_ms = harness.wheel.now_ms() + case.jump_ms;
    let model_keys = harness.model.by_due.keys();
    let expect_fired = model_keys.filter(|&&(due_ms, _)| due_ms <= now_ms).count();
    // `advance` checks order, none early, nothing left behind, each once.
    let fired = harness.advance(now_ms)?;
    prop_assert_eq!(fired.len(), expect_fired);
    prop_assert_eq!(harness.wheel.len(), held - fired.len());
    harness.drain()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(768))]

    /// Mostly small steps: exercises slot-by-slot firing and cascades.
    #[test]
    fn wheel_matches_model((config, start_ms, ops) in case_strategy(false)) {
        run_case(config, start_ms, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1536))]

    /// Mostly large steps and jumps: exercises catch-up over many slots.
    /// More cases: each is cheap and the state space is wider.
    #[test]
    fn wheel_matches_model_big_steps((config, start_ms, ops) in case_strategy(true)) {
        run_case(config, start_ms, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(768))]

    /// After any history, one forward clock jump fires, in one call and in
    /// `(due_ms, key)` order, exactly the entries due by the new now, each
    /// once; the rest stay held and fire once later.
    #[test]
    fn forward_jump_fires_everything_due_exactly_once(case in jump_case_strategy()) {
        run_jump(&case)?;
    }
}
