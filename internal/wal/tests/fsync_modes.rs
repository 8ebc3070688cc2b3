//! Durability callbacks per fsync mode, group commit, close semantics, and
//! reads concurrent with appends. Waits are on channels with deadlines.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use chronos_wal::{FsyncMode, RecordHeader, Wal, WalOptions};
use common::*;

fn opts(fsync: FsyncMode) -> WalOptions {
    WalOptions {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 4096,
        fsync,
    }
}

fn one(index: u64, len: usize) -> Vec<Rec> {
    vec![(
        RecordHeader {
            term: 1,
            index,
            seq: index,
            ts_ms: index,
        },
        payload(index, len),
    )]
}

/// What a callback saw when it ran.
struct Seen {
    last_index: u64,
    durable_index: Option<u64>,
    fsyncs_total: u64,
    ok: bool,
}

#[test]
fn always_mode_calls_back_after_fsync_in_append_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Arc::new(Wal::open(dir.path(), opts(FsyncMode::Always)).expect("open"));
    let (tx, rx) = mpsc::channel::<Seen>();
    let next_index = Arc::new(parking_lot::Mutex::new(1u64));
    let writers: Vec<_> = (0..3)
        .map(|_| {
            let (wal, tx, next_index) = (Arc::clone(&wal), tx.clone(), Arc::clone(&next_index));
            thread::spawn(move || {
                for _ in 0..40 {
                    // Index assignment and append under one lock, as a Raft log would.
                    let mut next = next_index.lock();
                    let batch = one(*next, 200);
                    let (w, tx) = (Arc::clone(&wal), tx.clone());
                    let refs: Vec<(RecordHeader, &[u8])> =
                        batch.iter().map(|(h, p)| (*h, p.as_slice())).collect();
                    let last_index = *next;
                    wal.append(
                        &refs,
                        Box::new(move |r| {
                            let stats = w.stats();
                            let _ = tx.send(Seen {
                                last_index,
                                durable_index: w.durable_index(),
                                fsyncs_total: stats.fsyncs_total,
                                ok: r.is_ok(),
                            });
                        }),
                    )
                    .expect("append");
                    *next += 1;
                }
            })
        })
        .collect();
    drop(tx);
    for w in writers {
        w.join().expect("writer");
    }
    let mut previous = 0;
    for _ in 0..120 {
        let seen = rx.recv_timeout(DEADLINE).expect("callback before deadline");
        assert!(seen.ok);
        assert!(seen.fsyncs_total >= 1, "callback ran before any fsync");
        assert!(
            seen.durable_index >= Some(seen.last_index),
            "callback before its data was durable"
        );
        assert!(seen.last_index > previous, "callbacks out of append order");
        previous = seen.last_index;
    }
    let stats = wal.stats();
    assert_eq!(stats.appends_total, 120);
    assert!(
        stats.fsyncs_total <= 120,
        "group commit never needs more fsyncs than appends"
    );
    assert!(stats.fsync_time_ns_total > 0);
}

#[test]
fn batch_mode_waits_for_max_delay_and_groups_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(
        dir.path(),
        opts(FsyncMode::Batch {
            max_delay: Duration::from_secs(3600),
        }),
    )
    .expect("open");
    let receivers: Vec<_> = (1..=10)
        .map(|i| append_watch(&wal, &one(i, 100)).expect("append"))
        .collect();
    // With an hour of delay nothing can have been flushed yet.
    assert!(receivers.iter().all(|rx| rx.try_recv().is_err()));
    assert_eq!(wal.durable_index(), None);
    assert_eq!(wal.stats().fsyncs_total, 0);
    // sync() forces the batch: one fsync covers all ten appends, and their
    // callbacks ran before sync returned.
    wal.sync().expect("sync");
    for rx in &receivers {
        rx.try_recv()
            .expect("called before sync returned")
            .expect("durable");
    }
    assert_eq!(wal.stats().fsyncs_total, 1);
    assert_eq!(wal.durable_index(), Some(10));

    // Past the byte threshold (4 x 1 MiB) the flush starts without waiting
    // for the delay; below it (the first three) nothing is flushed.
    let big = (chronos_wal::BATCH_FLUSH_BYTES / 4) as usize;
    let receivers: Vec<_> = (11..=13)
        .map(|i| append_watch(&wal, &one(i, big)).expect("append"))
        .collect();
    assert!(receivers.iter().all(|rx| rx.try_recv().is_err()));
    let last = append_watch(&wal, &one(14, big)).expect("append");
    for rx in receivers.iter().chain([&last]) {
        rx.recv_timeout(DEADLINE)
            .expect("flushed by size")
            .expect("durable");
    }
    assert_eq!(wal.durable_index(), Some(14));
}

#[test]
fn batch_mode_flushes_after_a_short_delay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let max_delay = Duration::from_millis(20);
    let wal = Wal::open(dir.path(), opts(FsyncMode::Batch { max_delay })).expect("open");
    let started = Instant::now();
    let rx = append_watch(&wal, &one(1, 10)).expect("append");
    rx.recv_timeout(DEADLINE)
        .expect("callback")
        .expect("durable");
    assert!(started.elapsed() >= max_delay, "flushed before max_delay");
    assert_eq!(wal.durable_index(), Some(1));
    assert!(wal.stats().fsyncs_total >= 1);
}

#[test]
fn periodic_mode_acknowledges_before_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let interval = Duration::from_secs(3600);
    let wal = Wal::open(dir.path(), opts(FsyncMode::Periodic { interval })).expect("open");
    let called = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&called);
    let batch = one(1, 10);
    wal.append(
        &[(batch[0].0, &batch[0].1[..])],
        Box::new(move |r| flag.store(r.is_ok(), Ordering::SeqCst)),
    )
    .expect("append");
    assert!(
        called.load(Ordering::SeqCst),
        "periodic callbacks run before append returns"
    );
    assert_eq!(
        wal.durable_index(),
        None,
        "...and before the data is durable"
    );
    assert_eq!(wal.stats().fsyncs_total, 0);
    wal.sync().expect("sync");
    assert_eq!(wal.durable_index(), Some(1));
    assert_eq!(wal.stats().fsyncs_total, 1);
}

#[test]
fn periodic_mode_fsyncs_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(
        dir.path(),
        opts(FsyncMode::Periodic {
            interval: Duration::from_millis(10),
        }),
    )
    .expect("open");
    append_batch(&wal, &one(1, 10)).expect("append");
    let deadline = Instant::now() + DEADLINE;
    while wal.durable_index() != Some(1) {
        assert!(Instant::now() < deadline, "background fsync never happened");
        thread::sleep(Duration::from_millis(2));
    }
    assert!(wal.stats().fsyncs_total >= 1);
}

#[test]
fn close_flushes_and_runs_outstanding_callbacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = FsyncMode::Batch {
        max_delay: Duration::from_secs(3600),
    };
    let wal = Wal::open(dir.path(), opts(mode)).expect("open");
    let receivers: Vec<_> = (1..=5)
        .map(|i| append_watch(&wal, &one(i, 10)).expect("append"))
        .collect();
    drop(wal);
    for rx in &receivers {
        rx.try_recv()
            .expect("callback ran during drop")
            .expect("durable");
    }
    let wal = Wal::open(dir.path(), opts(mode)).expect("reopen");
    assert_eq!(wal.last_header().map(|h| h.index), Some(5));
    wal.close().expect("close");
    assert!(matches!(
        append_batch(&wal, &one(6, 1)),
        Err(chronos_wal::WalError::Closed)
    ));
}

#[test]
fn dropping_the_last_handle_inside_a_callback_does_not_deadlock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Arc::new(Wal::open(dir.path(), opts(FsyncMode::Always)).expect("open"));
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let held = Arc::clone(&wal);
    let batch = one(1, 10);
    wal.append(
        &[(batch[0].0, &batch[0].1[..])],
        Box::new(move |_| {
            let _ = gate_rx.recv_timeout(DEADLINE);
            drop(held); // the last handle: Wal::drop runs on the flusher thread
            let _ = done_tx.send(());
        }),
    )
    .expect("append");
    drop(wal);
    gate_tx.send(()).expect("gate");
    done_rx
        .recv_timeout(DEADLINE)
        .expect("callback finished: no deadlock");
}

#[test]
fn readers_see_consistent_prefixes_while_appending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Arc::new(
        Wal::open(
            dir.path(),
            WalOptions {
                segment_bytes: 8 * 1024,
                index_interval_bytes: 512,
                fsync: FsyncMode::Periodic {
                    interval: Duration::from_millis(5),
                },
            },
        )
        .expect("open"),
    );
    let total = 2000u64;
    let writer = {
        let wal = Arc::clone(&wal);
        thread::spawn(move || {
            for i in 1..=total {
                append_batch(&wal, &one(i, (i % 300) as usize)).expect("append");
            }
        })
    };
    let mut reads = 0;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let end = wal.last_header().map_or(0, |h| h.index);
        let got = read_all(&wal);
        // Every read is a contiguous run from 1 with intact payloads, at least
        // as long as the log was just before the read started.
        assert!(got.len() as u64 >= end);
        for (i, (h, p)) in got.iter().enumerate() {
            assert_eq!(h.index, i as u64 + 1);
            assert_eq!(p, &payload(h.index, (h.index % 300) as usize));
        }
        reads += 1;
        if end == total || Instant::now() > deadline {
            break;
        }
    }
    writer.join().expect("writer");
    assert_eq!(read_all(&wal).len() as u64, total);
    assert!(reads > 1);
}
