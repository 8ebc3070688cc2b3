//! Wheel throughput at the default geometry (1 ms tick, 256 slots, 60 s
//! horizon): 1M entries spread over 60 s.
//! - `insert`: inserts per second into an empty wheel.
//! - `advance_1ms_steps`: fires per second when the driver advances 1 ms at
//!   a time to the end (60 000 calls, most slots holding ~16 entries).
//! - `advance_one_jump`: fires per second when one call catches up 60 s.
//! - `cancel`: cancels per second, in scrambled key order.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chronos_scheduler::{Fired, TimingWheel, WheelConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ENTRIES: u64 = 1_000_000;
const SPREAD_MS: i64 = 60_000;
const START_MS: i64 = 1_700_000_000_000;

/// A fixed scramble (SplitMix64 finaliser) so dues and cancel order are
/// spread but reproducible.
fn scramble(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn due_of(key: u64) -> i64 {
    START_MS + 1 + (scramble(key) % SPREAD_MS as u64) as i64
}

fn new_wheel() -> TimingWheel<u64> {
    TimingWheel::new(WheelConfig::default(), START_MS).expect("default config is valid")
}

fn filled_wheel() -> TimingWheel<u64> {
    let mut wheel = new_wheel();
    for key in 0..ENTRIES {
        wheel.insert(key, due_of(key), key).expect("within horizon");
    }
    wheel
}

/// Runs `measured` on `iters` fresh inputs made by `setup`, timing only it.
fn timed<S>(iters: u64, setup: impl Fn() -> S, measured: impl Fn(S)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let input = setup();
        let started = Instant::now();
        measured(input);
        total += started.elapsed();
    }
    total
}

fn wheel_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("wheel_1M_over_60s");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(ENTRIES));

    group.bench_function("insert", |b| {
        b.iter_custom(|iters| {
            timed(iters, new_wheel, |mut wheel| {
                for key in 0..ENTRIES {
                    wheel.insert(key, due_of(key), key).expect("within horizon");
                }
                black_box(wheel.len());
            })
        })
    });

    group.bench_function("advance_1ms_steps", |b| {
        b.iter_custom(|iters| {
            timed(iters, filled_wheel, |mut wheel| {
                let mut out: Vec<Fired<u64>> = Vec::with_capacity(1024);
                let mut fired = 0;
                for now_ms in START_MS..=START_MS + SPREAD_MS {
                    out.clear();
                    fired += wheel.advance(now_ms, &mut out);
                    black_box(&out);
                }
                assert_eq!(fired as u64, ENTRIES);
            })
        })
    });

    group.bench_function("advance_one_jump", |b| {
        b.iter_custom(|iters| {
            timed(iters, filled_wheel, |mut wheel| {
                let mut out: Vec<Fired<u64>> = Vec::with_capacity(ENTRIES as usize);
                let fired = wheel.advance(START_MS + SPREAD_MS, &mut out);
                assert_eq!(fired as u64, ENTRIES);
                black_box(&out);
            })
        })
    });

    group.bench_function("cancel", |b| {
        b.iter_custom(|iters| {
            timed(iters, filled_wheel, |mut wheel| {
                // Multiplying by an odd constant permutes 0..2^20.
                for i in 0..(1u64 << 20) {
                    let key = i.wrapping_mul(0x9E37_79B9) & ((1 << 20) - 1);
                    if key < ENTRIES {
                        black_box(wheel.cancel(key));
                    }
                }
                assert!(wheel.is_empty());
            })
        })
    });
    group.finish();
}

criterion_group!(benches, wheel_benches);
criterion_main!(benches);
