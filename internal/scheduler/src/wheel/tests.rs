//! Unit tests for placement, cascade boundaries, firing order, cancel and
//! the clock rules. Time is injected; nothing sleeps.

use super::*;

fn wheel(tick_ms: i64, slots: u32, horizon_ms: i64, now_ms: i64) -> TimingWheel<u64> {
    let config = WheelConfig {
        tick_ms,
        slots,
        horizon_ms,
    };
    match TimingWheel::new(config, now_ms) {
        Ok(w) => w,
        Err(e) => panic!("bad test config {config:?}: {e}"),
    }
}

/// Advances and returns `(key, due_ms)` of what fired, checking items.
fn fire(w: &mut TimingWheel<u64>, now_ms: i64) -> Vec<(u64, i64)> {
    let mut out = Vec::new();
    let n = w.advance(now_ms, &mut out);
    assert_eq!(n, out.len());
    out.into_iter()
        .map(|f| {
            assert_eq!(f.item, f.key * 10, "item travels with its key");
            (f.key, f.due_ms)
        })
        .collect()
}

fn put(w: &mut TimingWheel<u64>, key: u64, due_ms: i64) {
    if let Err(e) = w.insert(key, due_ms, key * 10) {
        panic!("insert {key}@{due_ms}: {e}");
    }
}

/// Which level an entry currently sits on.
fn level_of(w: &TimingWheel<u64>, key: u64) -> Option<usize> {
    (0..w.geo.levels).find(|&level| {
        (0..w.geo.slots).any(|slot| {
            w.store
                .bucket(level, slot)
                .iter()
                .any(|&id| w.store.key_due(id).0 == key)
        })
    })
}

#[test]
fn default_config_has_two_levels() {
    let w: TimingWheel<()> = match TimingWheel::new(WheelConfig::default(), 0) {
        Ok(w) => w,
        Err(e) => panic!("{e}"),
    };
    assert_eq!((w.levels(), w.tick_ms(), w.horizon_ms()), (2, 1, 60_000));
    assert_eq!(w.window_end_ms(), 60_000);
}

#[test]
fn entries_fire_at_their_due_and_not_before() {
    let mut w = wheel(1, 8, 300, 0);
    assert_eq!(w.levels(), 3);
    put(&mut w, 1, 1);
    put(&mut w, 2, 5);
    assert!(fire(&mut w, 0).is_empty());
    assert_eq!(fire(&mut w, 1), vec![(1, 1)]);
    assert!(fire(&mut w, 4).is_empty());
    assert_eq!(fire(&mut w, 5), vec![(2, 5)]);
    assert!(w.is_empty());
}

#[test]
fn cascade_boundaries_fire_exactly_on_time() {
    // 8 slots: level 0 = ticks, level 1 = 8 ticks, level 2 = 64 ticks.
    let mut w = wheel(1, 8, 300, 0);
    let dues = [7, 8, 9, 15, 16, 63, 64, 65, 71, 72, 127, 128, 255, 256, 300];
    for (key, &due) in dues.iter().enumerate() {
        put(&mut w, key as u64, due);
    }
    assert_eq!(level_of(&w, 0), Some(0)); // 7
    assert_eq!(level_of(&w, 1), Some(1)); // 8: first level-1 slot after now
    assert_eq!(level_of(&w, 5), Some(1)); // 63: last level-1 slot
    assert_eq!(level_of(&w, 6), Some(2)); // 64: first level-2 slot
    assert_eq!(level_of(&w, 14), Some(2)); // 300
    for now in 1..=300 {
        let fired = fire(&mut w, now);
        let expect: Vec<(u64, i64)> = dues
            .iter()
            .enumerate()
            .filter(|&(_, &d)| d == now)
            .map(|(k, &d)| (k as u64, d))
            .collect();
        assert_eq!(fired, expect, "at now {now}");
    }
    assert!(w.is_empty());
}

/// Exhaustive over small geometries: every due from a little in the past up
/// to the horizon edge, from unaligned nows, fires exactly when due and in
/// order, and `next_due_ms` is exact throughout.
#[test]
fn exhaustive_small_geometries() {
    for tick_ms in [1, 3, 10] {
        for slots in [2, 4, 8] {
            for horizon_ms in [0, 1, 7, 40, 100] {
                for start_ms in [-13, 0, 5, 29] {
                    check_all_dues(tick_ms, slots, horizon_ms, start_ms);
                }
            }
        }
    }
}

fn check_all_dues(tick_ms: i64, slots: u32, horizon_ms: i64, start_ms: i64) {
    let ctx = format!("tick {tick_ms} slots {slots} horizon {horizon_ms} start {start_ms}");
    let mut w = wheel(tick_ms, slots, horizon_ms, start_ms);
    let dues: Vec<i64> = (start_ms - 3..=start_ms + horizon_ms).collect();
    for (key, &due) in dues.iter().enumerate().rev() {
        put(&mut w, key as u64, due);
    }
    assert_eq!(
        w.insert(999, start_ms + horizon_ms + 1, 0),
        Err(InsertError::BeyondHorizon {
            key: 999,
            due_ms: start_ms + horizon_ms + 1,
            window_end_ms: start_ms + horizon_ms
        }),
        "{ctx}"
    );
    for now in start_ms..=start_ms + horizon_ms + 2 {
        let remaining_min = dues.iter().copied().filter(|&d| d >= now).min();
        let past_min = dues.iter().copied().min().filter(|_| now == start_ms);
        assert_eq!(
            w.next_due_ms(),
            past_min.or(remaining_min),
            "{ctx} now {now}"
        );
        let fired = fire(&mut w, now);
        let expect: Vec<(u64, i64)> = dues
            .iter()
            .enumerate()
            .filter(|&(_, &d)| d <= now && (now == start_ms || d == now))
            .map(|(k, &d)| (k as u64, d))
            .collect();
        assert_eq!(fired, expect, "{ctx} now {now}");
    }
    assert!(w.is_empty(), "{ctx}");
}

#[test]
fn coarse_tick_orders_within_a_slot_and_fires_partially() {
    let mut w = wheel(10, 16, 1000, 100);
    put(&mut w, 4, 109);
    put(&mut w, 3, 105);
    put(&mut w, 2, 101);
    put(&mut w, 9, 101);
    put(&mut w, 1, 100);
    put(&mut w, 7, 112);
    assert_eq!(w.next_due_ms(), Some(100));
    assert_eq!(fire(&mut w, 104), vec![(1, 100), (2, 101), (9, 101)]);
    assert_eq!(w.next_due_ms(), Some(105));
    assert_eq!(fire(&mut w, 109), vec![(3, 105), (4, 109)]);
    assert_eq!(fire(&mut w, 111), vec![]);
    assert_eq!(fire(&mut w, 112), vec![(7, 112)]);
}

#[test]
fn same_due_fires_in_key_order() {
    let mut w = wheel(1, 256, 60_000, 0);
    for key in (0..50).rev() {
        put(&mut w, key, 30_000);
    }
    let fired = fire(&mut w, 40_000);
    let keys: Vec<u64> = fired.iter().map(|&(k, _)| k).collect();
    assert_eq!(keys, (0..50).collect::<Vec<_>>());
}

#[test]
fn past_and_present_dues_fire_on_next_advance_or_poll() {
    let mut w = wheel(1, 8, 100, 1_000);
    put(&mut w, 3, 1_000);
    put(&mut w, 2, 400);
    put(&mut w, 1, i64::MIN);
    put(&mut w, 4, 1_001);
    assert_eq!(w.len(), 4, "insert never fires");
    assert_eq!(w.next_due_ms(), Some(i64::MIN));
    let mut out = Vec::new();
    assert_eq!(w.poll(&mut out), 3);
    let fired: Vec<(u64, i64)> = out.iter().map(|f| (f.key, f.due_ms)).collect();
    assert_eq!(fired, vec![(1, i64::MIN), (2, 400), (3, 1_000)]);
    assert_eq!(fire(&mut w, 1_001), vec![(4, 1_001)]);
}

#[test]
fn horizon_edge_and_window_move_with_now() {
    let mut w = wheel(1, 256, 60_000, 5);
    assert_eq!(w.window_end_ms(), 60_005);
    put(&mut w, 1, 60_005);
    assert!(matches!(
        w.insert(2, 60_006, 20),
        Err(InsertError::BeyondHorizon { key: 2, .. })
    ));
    assert_eq!(w.len(), 1, "refused insert changes nothing");
    assert!(fire(&mut w, 10).is_empty());
    put(&mut w, 2, 60_010);
    assert_eq!(fire(&mut w, 60_009), vec![(1, 60_005)]);
    assert_eq!(fire(&mut w, 60_010), vec![(2, 60_010)]);
}

#[test]
fn duplicate_key_is_refused_until_it_fires() {
    let mut w = wheel(1, 256, 60_000, 0);
    put(&mut w, 7, 50);
    assert_eq!(
        w.insert(7, 10, 0),
        Err(InsertError::DuplicateKey { key: 7 })
    );
    assert_eq!(w.next_due_ms(), Some(50), "refused insert leaves no trace");
    assert_eq!(fire(&mut w, 50), vec![(7, 50)]);
    put(&mut w, 7, 60);
    assert_eq!(fire(&mut w, 60), vec![(7, 60)]);
}

#[test]
fn cancel_at_each_level_and_after_cascade() {
    let mut w = wheel(1, 8, 300, 0);
    put(&mut w, 1, 5); // level 0
    put(&mut w, 2, 20); // level 1
    put(&mut w, 3, 200); // level 2
    put(&mut w, 4, 201); // level 2, cancelled after cascading
    put(&mut w, 5, 202);
    assert_eq!(
        (level_of(&w, 1), level_of(&w, 2), level_of(&w, 3)),
        (Some(0), Some(1), Some(2))
    );
    assert_eq!(w.cancel(1), Some(10));
    assert_eq!(w.cancel(2), Some(20));
    assert_eq!(w.cancel(3), Some(30));
    assert_eq!(w.cancel(3), None, "second cancel");
    assert_eq!(w.cancel(42), None, "unknown key");
    assert!(fire(&mut w, 195).is_empty());
    assert_eq!(level_of(&w, 4), Some(1), "cascaded from level 2 at 192");
    assert!(fire(&mut w, 200).is_empty());
    assert_eq!(level_of(&w, 4), Some(0), "cascaded to level 0 at 200");
    assert_eq!(w.cancel(4), Some(40));
    assert!(!w.contains_key(4));
    assert_eq!(fire(&mut w, 300), vec![(5, 202)]);
    assert_eq!(w.cancel(5), None, "fired entries cannot be cancelled");
    assert!(w.is_empty());
}

#[test]
fn next_due_tracks_cancel_of_the_earliest() {
    let mut w = wheel(1, 8, 300, 0);
    assert_eq!(w.next_due_ms(), None);
    put(&mut w, 1, 250);
    put(&mut w, 2, 40);
    put(&mut w, 3, 41);
    assert_eq!(w.next_due_ms(), Some(40));
    assert_eq!(w.cancel(2), Some(20));
    assert_eq!(w.next_due_ms(), Some(41));
    assert_eq!(w.cancel(3), Some(30));
    assert_eq!(w.next_due_ms(), Some(250));
    put(&mut w, 4, 0);
    assert_eq!(w.next_due_ms(), Some(0));
}

#[test]
fn backwards_now_is_ignored() {
    let mut w = wheel(1, 256, 60_000, 1_000);
    put(&mut w, 1, 1_010);
    assert!(fire(&mut w, 1_005).is_empty());
    put(&mut w, 2, 900); // due in the past
    assert!(
        fire(&mut w, 990).is_empty(),
        "nothing fires on a backwards now"
    );
    assert_eq!(w.now_ms(), 1_005);
    assert_eq!(w.window_end_ms(), 61_005, "window does not shrink");
    assert_eq!(w.len(), 2, "nothing is lost");
    assert_eq!(fire(&mut w, 1_010), vec![(2, 900), (1, 1_010)]);
}

#[test]
fn huge_jump_skips_empty_time() {
    // Stepping tick by tick over 10^15 ms would never finish.
    let mut w = wheel(1, 256, 3_600_000, 0);
    put(&mut w, 3, 3_600_000);
    put(&mut w, 1, 1);
    put(&mut w, 2, 65_536);
    let jump_ms = 1_000_000_000_000_000;
    assert_eq!(
        fire(&mut w, jump_ms),
        vec![(1, 1), (2, 65_536), (3, 3_600_000)]
    );
    assert!(fire(&mut w, 2 * jump_ms).is_empty());
    put(&mut w, 4, 2 * jump_ms + 70_000);
    assert_eq!(w.next_due_ms(), Some(2 * jump_ms + 70_000));
    assert_eq!(fire(&mut w, 3 * jump_ms), vec![(4, 2 * jump_ms + 70_000)]);
}

#[test]
fn times_before_the_epoch_work() {
    let mut w = wheel(7, 16, 5_000, -3_000);
    put(&mut w, 1, -1);
    put(&mut w, 2, 0);
    put(&mut w, 3, -2_999);
    put(&mut w, 4, 1_999);
    assert_eq!(fire(&mut w, -2), vec![(3, -2_999)]);
    assert_eq!(fire(&mut w, 0), vec![(1, -1), (2, 0)]);
    assert_eq!(fire(&mut w, 1_998), vec![]);
    assert_eq!(fire(&mut w, 1_999), vec![(4, 1_999)]);
}

#[test]
fn out_vector_is_appended_to_not_cleared() {
    let mut w = wheel(1, 256, 1_000, 0);
    put(&mut w, 1, 5);
    let mut out = vec![Fired {
        key: 99,
        due_ms: 1_000,
        item: 0,
    }];
    assert_eq!(w.advance(5, &mut out), 1);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].key, 1);
}
