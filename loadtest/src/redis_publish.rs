//! Mode `redis-publish`: the `publish` workload against the Redis delay queue
//! ([`crate::redis_queue`]). N clients, each on its own connection, send `ZADD
//! <queue>:delayed <due_ms> <job>` one at a time (`--batch 1`) or `--batch`
//! ZADDs pipelined, closed loop, bounded by `--duration` and `--events`. Latency
//! is per round trip: with `appendfsync always` Redis writes and fsyncs its AOF
//! before it replies, so that is send → durable ack, as for Chronos.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::redis_queue::{self, Keys};

#[derive(clap::Args, Clone)]
pub struct RedisPublishArgs {
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    addr: String,
    /// Concurrent clients, each with its own connection and one pipeline outstanding.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// ZADDs per pipeline (the `publish` mode's events per RPC).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[command(flatten)]
    bounds: crate::publish::Bounds,
    /// Queue name (keys `<queue>:delayed`, …); its keys are removed after the run.
    #[arg(long, default_value = "lt-publish")]
    queue: String,
    /// Schedule each job this far in the future (0 = due now).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    due_in: Duration,
    /// Spread due times uniformly over this span after `due_in`.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    due_spread: Duration,
    /// Remove each job (`ZREM`, pipelined as its ZADDs were) as soon as its
    /// ZADDs are answered: the `publish --cancel` workload. Needs a `--due-in`.
    #[arg(long)]
    cancel: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

struct Shared {
    sent_events: AtomicU64,
    /// `--cancel`: jobs removed in the measured part of the run.
    cancelled: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

async fn client_loop(
    args: RedisPublishArgs,
    no: usize,
    shared: Arc<Shared>,
    measure_from: Instant,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut con = redis_queue::connect(&args.addr).await?;
    let keys = Keys::new(&args.queue);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let payload = "x".repeat(args.bounds.payload);
    let run = std::process::id();
    let spread_ms = args.due_spread.as_millis().max(1) as u64;
    let (mut seq, mut measured_events) = (0u64, 0u64);
    let n = args.batch.max(1) as u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let now_ms = crate::report::now_us() / 1000;
        let mut pipe = redis::pipe();
        let mut jobs = Vec::new();
        for _ in 0..n {
            seq += 1;
            let due_ms = if args.due_in.is_zero() && args.due_spread.is_zero() {
                now_ms
            } else {
                // A multiplicative hash spreads consecutive jobs over the span, as `publish` does.
                let jitter = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) % spread_ms;
                now_ms + args.due_in.as_millis() as i64 + jitter as i64
            };
            let job = redis_queue::member(&format!("lt-{run}-{no}-{seq}"), due_ms, &payload);
            pipe.zadd(&keys.delayed, &job, due_ms).ignore();
            if args.cancel {
                jobs.push(job);
            }
        }
        let started = Instant::now();
        let mut result = (pipe.query_async::<()>(&mut con).await).map_err(|e| e.to_string());
        if result.is_ok() && args.cancel {
            // Timed apart, like the ZADDs.
            let removing = Instant::now();
            let mut pipe = redis::pipe();
            for job in &jobs {
                pipe.zrem(&keys.delayed, job);
            }
            result = match pipe.query_async::<Vec<u64>>(&mut con).await {
                Ok(removed) if removed.iter().all(|&r| r == 1) => {
                    if started >= measure_from {
                        hist.record(removing.elapsed().as_micros().max(1) as u64)?;
                        shared.cancelled.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(())
                }
                Ok(_) => Err("a ZREM found no job".to_string()),
                Err(e) => Err(e.to_string()),
            };
        }
        match result {
            Ok(()) => {
                let total = shared.sent_events.fetch_add(n, Ordering::Relaxed) + n;
                if started >= measure_from {
                    hist.record(started.elapsed().as_micros().max(1) as u64)?;
                    measured_events += n;
                }
                if args.bounds.events > 0 && total >= args.bounds.events {
                    shared.stop.store(true, Ordering::Relaxed);
                }
            }
            Err(error) => {
                if shared.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("client {no}: {error}");
                }
            }
        }
    }
    Ok((hist, measured_events))
}

/// Runs the `redis-publish` mode and prints its summary (the `publish` mode's format).
pub async fn run(args: RedisPublishArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.cancel || !args.due_in.is_zero(),
        "--cancel needs a --due-in (a job due now may be taken before its ZREM)"
    );
    redis_queue::ping(&args.addr).await?;
    let shared = Arc::new(Shared {
        sent_events: AtomicU64::new(0),
        cancelled: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let start = Instant::now();
    let measure_from = start + args.bounds.warmup;
    let tasks: Vec<_> = (0..args.clients)
        .map(|no| tokio::spawn(client_loop(args.clone(), no, shared.clone(), measure_from)))
        .collect();
    let progress = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = shared.sent_events.load(Ordering::Relaxed);
                eprint!(
                    "\r{:>10} events  {:>9} events/s  errors {}   ",
                    now,
                    now - last,
                    shared.errors.load(Ordering::Relaxed)
                );
                last = now;
            }
        })
    };
    let stopper = {
        let (shared, limit) = (shared.clone(), args.bounds.warmup + args.bounds.duration);
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            shared.stop.store(true, Ordering::Relaxed);
        })
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut measured = 0u64;
    for task in tasks {
        let (h, n) = task.await??;
        hist.add(h)?;
        measured += n;
    }
    let elapsed = start
        .elapsed()
        .saturating_sub(args.bounds.warmup)
        .as_secs_f64()
        .max(1e-9);
    progress.abort();
    stopper.abort();
    eprintln!();
    redis_queue::drop_queue(
        &mut redis_queue::connect(&args.addr).await?,
        &Keys::new(&args.queue),
    )
    .await?;
    let rate = measured as f64 / elapsed;
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let errors = shared.errors.load(Ordering::Relaxed);
    if args.json {
        let summary = serde_json::json!({
            "mode": "redis-publish", "clients": args.clients, "connections": args.clients, "batch": args.batch, "payload_bytes": args.bounds.payload,
            "events": measured, "seconds": elapsed, "events_per_sec": rate, "rpcs": hist.len(), "errors": errors,
            "cancelled": args.cancel.then(|| shared.cancelled.load(Ordering::Relaxed)),
            "latency_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": hist.max() as f64 / 1000.0},
        });
        println!("{summary}");
    } else {
        println!(
            "mode redis-publish  clients {}  batch {} (pipelined ZADDs)  payload {} B",
            args.clients, args.batch, args.bounds.payload
        );
        println!("events {measured} in {elapsed:.2}s = {rate:.0} events/s  ({} round trips, {errors} errors)", hist.len());
        println!(
            "round-trip latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            hist.max() as f64 / 1000.0
        );
    }
    Ok(())
}
