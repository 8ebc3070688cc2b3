//! Model test: the wheel against a sorted map keyed by `(due_ms, key)`.
//!
//! Random sequences of inserts (dues in the past, within the horizon and a
//! little beyond it; keys from a small range so duplicates happen), cancels
//! (existing and unknown keys) and advances (small steps, large steps, jumps
//! of hours, backwards readings). After every operation the wheel must agree
//! with the model on the result, `len` and `next_due_ms`; every advance must
//! fire exactly what the model pops, in the same order, and nothing early.

use std::collections::{BTreeMap, HashMap};

use chronos_scheduler::{Fired, InsertError, TimingWheel, WheelConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Insert `key` due `offset_ms` after now (negative: in the past).
    Insert {
        key: u64,
        offset_ms: i64,
    },
    Cancel {
        key: u64,
    },
    /// Advance by `step_ms` (negative: a backwards clock reading).
    Advance {
        step_ms: i64,
    },
}

/// The item stored for an insert: which op inserted it, so swapped items
/// are caught and not just swapped keys.
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

fn config_strategy() -> impl Strategy<Value = WheelConfig> {
    (
        prop_oneof![Just(1i64), Just(2), Just(7), Just(10)],
        prop_oneof![Just(2u32), Just(4), Just(8), Just(64), Just(256)],
        prop_oneof![0i64..=20, 0i64..=3_000, Just(60_000)],
    )
        .prop_map(|(tick_ms, slots, horizon_ms)| WheelConfig {
            tick_ms,
            slots,
            horizon_ms,
        })
}

/// Operations; `big` weights advances toward large steps and jumps.
fn op_strategy(horizon_ms: i64, big: bool) -> impl Strategy<Value = Op> {
    let key = 0u64..96;
    let insert = (key.clone(), -50i64..=horizon_ms + 20)
        .prop_map(|(key, offset_ms)| Op::Insert { key, offset_ms });
    let at_edge = key.clone().prop_map(move |key| Op::Insert {
        key,
        offset_ms: horizon_ms,
    });
    let cancel = key.prop_map(|key| Op::Cancel { key });
    let small = (0i64..=12).prop_map(|step_ms| Op::Advance { step_ms });
    let large = (0i64..=2 * horizon_ms + 300).prop_map(|step_ms| Op::Advance { step_ms });
    let jump = (3_600_000i64..=86_400_000).prop_map(|step_ms| Op::Advance { step_ms });
    let back = (-500i64..0).prop_map(|step_ms| Op::Advance { step_ms });
    let (w_small, w_large, w_jump) = if big { (2, 6, 2) } else { (8, 2, 1) };
    prop_oneof![
        10 => insert,
        1 => at_edge,
        3 => cancel,
        w_small => small,
        w_large => large,
        w_jump => jump,
        1 => back,
    ]
}

fn case_strategy(big: bool) -> impl Strategy<Value = (WheelConfig, i64, Vec<Op>)> {
    (config_strategy(), -100_000i64..=2_000_000_000_000).prop_flat_map(move |(config, start)| {
        let ops = prop::collection::vec(op_strategy(config.horizon_ms, big), 1..300);
        (Just(config), Just(start), ops)
    })
}

fn run_case(config: WheelConfig, start_ms: i64, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut wheel = TimingWheel::new(config, start_ms)
        .map_err(|e| TestCaseError::fail(format!("config {config:?}: {e}")))?;
    let mut model = Model {
        now_ms: start_ms,
        horizon_ms: config.horizon_ms,
        ..Model::default()
    };
    let mut out = Vec::new();
    for (seq, op) in ops.iter().enumerate() {
        match *op {
            Op::Insert { key, offset_ms } => {
                let due_ms = model.now_ms + offset_ms;
                let expect = model.insert(key, due_ms, (key, seq));
                prop_assert_eq!(wheel.insert(key, due_ms, (key, seq)), expect, "op {}", seq);
            }
            Op::Cancel { key } => {
                prop_assert_eq!(wheel.cancel(key), model.cancel(key), "op {}", seq);
            }
            Op::Advance { step_ms } => {
                let now_ms = model.now_ms + step_ms;
                let expect = model.advance(now_ms);
                out.clear();
                let n = wheel.advance(now_ms, &mut out);
                prop_assert_eq!(n, out.len());
                prop_assert!(out.iter().all(|f| f.due_ms <= now_ms), "fired early");
                prop_assert_eq!(&out, &expect, "op {} advance to {}", seq, now_ms);
            }
        }
        prop_assert_eq!(wheel.now_ms(), model.now_ms);
        prop_assert_eq!(wheel.len(), model.by_due.len());
        prop_assert_eq!(wheel.next_due_ms(), model.next_due_ms(), "op {}", seq);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Mostly small steps: exercises slot-by-slot firing and cascades.
    #[test]
    fn wheel_matches_model((config, start_ms, ops) in case_strategy(false)) {
        run_case(config, start_ms, &ops)?;
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Mostly large steps and jumps: exercises catch-up over many slots.
    /// More cases: each is cheap and the state space is wider.
    #[test]
    fn wheel_matches_model_big_steps((config, start_ms, ops) in case_strategy(true)) {
        run_case(config, start_ms, &ops)?;
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// One forward clock jump past everything fires every entry exactly
    /// once, in `(due_ms, key)` order, and leaves the wheel empty.
    #[test]
    fn one_jump_fires_everything_once_in_order(
        config in config_strategy(),
        start_ms in -100_000i64..=2_000_000_000_000,
        entries in prop::collection::vec((0u64..1_000, -100i64..=60_000), 0..400),
        cancels in prop::collection::vec(0u64..1_000, 0..40),
        extra_ms in 0i64..=100_000_000,
    ) {
        let mut wheel = TimingWheel::new(config, start_ms)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut model = Model { now_ms: start_ms, horizon_ms: config.horizon_ms, ..Model::default() };
        for (seq, &(key, offset_ms)) in entries.iter().enumerate() {
            let due_ms = start_ms + offset_ms.min(config.horizon_ms);
            prop_assert_eq!(
                wheel.insert(key, due_ms, (key, seq)),
                model.insert(key, due_ms, (key, seq))
            );
        }
        for &key in &cancels {
            prop_assert_eq!(wheel.cancel(key), model.cancel(key));
        }
        let expect = model.advance(start_ms + config.horizon_ms + extra_ms);
        let mut out = Vec::new();
        wheel.advance(start_ms + config.horizon_ms + extra_ms, &mut out);
        prop_assert_eq!(&out, &expect);
        prop_assert!(out.windows(2).all(|w| (w[0].due_ms, w[0].key) < (w[1].due_ms, w[1].key)));
        prop_assert!(wheel.is_empty());
        prop_assert_eq!(wheel.next_due_ms(), None);
        out.clear();
        prop_assert_eq!(wheel.advance(i64::MAX, &mut out), 0);
    }
}
