//! Append throughput: batches of 1, 100 and 1000 records of 256 B under each
//! fsync mode. In `Always` and `Batch` mode every batch waits for its durable
//! callback before the next is appended (one appender, latency-bound); in
//! `Periodic` mode callbacks are immediate. Old segments are deleted between
//! samples so the bench's disk use stays bounded.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use chronos_wal::{FsyncMode, RecordHeader, Retention, Wal, WalOptions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const PAYLOAD_BYTES: usize = 256;
const KEEP_BYTES: u64 = 256 * 1024 * 1024;

fn modes() -> [(&'static str, FsyncMode); 3] {
    [
        ("always", FsyncMode::Always),
        (
            "batch_2ms",
            FsyncMode::Batch {
                max_delay: Duration::from_millis(2),
            },
        ),
        (
            "periodic_100ms",
            FsyncMode::Periodic {
                interval: Duration::from_millis(100),
            },
        ),
    ]
}

/// Appends `iters` batches of `batch` records and returns the time taken.
fn run(wal: &Wal, next_index: &mut u64, batch: usize, wait: bool, iters: u64) -> Duration {
    let payload = vec![0xABu8; PAYLOAD_BYTES];
    let (tx, rx) = mpsc::channel();
    let mut records: Vec<(RecordHeader, &[u8])> = Vec::with_capacity(batch);
    let started = Instant::now();
    for _ in 0..iters {
        records.clear();
        for _ in 0..batch {
            let header = RecordHeader {
                term: 1,
                index: *next_index,
                seq: *next_index,
                ts_ms: 0,
            };
            records.push((header, &payload));
            *next_index += 1;
        }
        let tx = tx.clone();
        wal.append(
            &records,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .expect("append");
        if wait {
            rx.recv().expect("flusher alive").expect("durable");
        }
    }
    started.elapsed()
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_256B");
    for (name, mode) in modes() {
        for batch in [1usize, 100, 1000] {
            let dir = tempfile::tempdir().expect("tempdir");
            let opts = WalOptions {
                segment_bytes: 64 * 1024 * 1024,
                fsync: mode,
                ..WalOptions::default()
            };
            let wal = Wal::open(dir.path(), opts).expect("open");
            let wait = !matches!(mode, FsyncMode::Periodic { .. });
            let mut next_index = 1;
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new(name, batch), &batch, |b, &batch| {
                b.iter_custom(|iters| {
                    let elapsed = run(&wal, &mut next_index, batch, wait, iters);
                    let keep = Retention {
                        max_age: None,
                        max_bytes: Some(KEEP_BYTES),
                    };
                    wal.remove_segments(&keep, u64::MAX).expect("retention");
                    elapsed
                });
            });
            let stats = wal.stats();
            eprintln!(
                "  {name}/{batch}: appends={} fsyncs={} mean_fsync_us={}",
                stats.appends_total,
                stats.fsyncs_total,
                stats.fsync_time_ns_total / stats.fsyncs_total.max(1) / 1000
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = append
}
criterion_main!(benches);
