//! Mode `publish`: N concurrent clients, each sending one event per RPC
//! (`--batch 1`, the Publish RPC) or batches (PublishBatch), closed loop, bounded
//! by `--duration` and `--events`. Latency is per RPC, from send to durable ack.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{Event, PublishBatchRequest, PublishRequest};
use hdrhistogram::Histogram;
use tonic::transport::Channel;

#[derive(clap::Args, Clone)]
pub struct PublishArgs {
    /// gRPC address of the node.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    addr: String,
    /// Concurrent clients (callers, each with one RPC outstanding at a time).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// HTTP/2 connections the clients share, round-robin (0 = one per client).
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Events per RPC; 1 uses Publish, more uses PublishBatch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Stop after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many events (0 = no limit).
    #[arg(long, default_value_t = 0)]
    events: u64,
    /// Not measured: the first part of the run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Schedule each event this far in the future (0 = due now).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    due_in: Duration,
    /// Spread due times uniformly over this span after `due_in`.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    due_spread: Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

struct Shared {
    sent_events: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

async fn client_loop(
    args: PublishArgs,
    channel: Channel,
    no: usize,
    shared: Arc<Shared>,
    measure_from: Instant,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut client = EventServiceClient::new(channel);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let payload = bytes::Bytes::from(vec![b'x'; args.payload]);
    let run = std::process::id();
    let mut seq = 0u64;
    let mut measured_events = 0u64;
    let spread_ms = args.due_spread.as_millis().max(1) as u64;
    let make = |seq: &mut u64| {
        *seq += 1;
        let schedule_ts = if args.due_in.is_zero() && args.due_spread.is_zero() {
            0
        } else {
            // A multiplicative hash spreads consecutive events over the span.
            let jitter = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) % spread_ms;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (now + args.due_in).as_millis() as i64 + jitter as i64
        };
        Event {
            message_id: format!("lt-{run}-{no}-{seq}"),
            topic: args.topic.clone(),
            payload: payload.clone(),
            schedule_ts,
            ..Default::default()
        }
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result = if args.batch <= 1 {
            client
                .publish(PublishRequest {
                    event: Some(make(&mut seq)),
                    reschedule: false,
                })
                .await
                .map(|_| ())
        } else {
            let events = (0..args.batch).map(|_| make(&mut seq)).collect();
            client
                .publish_batch(PublishBatchRequest { events })
                .await
                .map(|_| ())
        };
        let n = args.batch.max(1) as u64;
        match result {
            Ok(()) => {
                let total = shared.sent_events.fetch_add(n, Ordering::Relaxed) + n;
                if started >= measure_from {
                    hist.record(started.elapsed().as_micros().max(1) as u64)?;
                    measured_events += n;
                }
                if args.events > 0 && total >= args.events {
                    shared.stop.store(true, Ordering::Relaxed);
                }
            }
            Err(status) => {
                if shared.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("client {no}: {status}");
                }
            }
        }
    }
    Ok((hist, measured_events))
}

/// Runs the `publish` mode and prints its summary.
pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        sent_events: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let connections = match args.connections {
        0 => args.clients,
        n => n.min(args.clients),
    };
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = Channel::from_shared(args.addr.clone())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {}", args.addr))?;
        channels.push(channel);
    }
    let mut tasks = Vec::new();
    for no in 0..args.clients {
        let channel = channels[no % connections].clone();
        tasks.push(tokio::spawn(client_loop(
            args.clone(),
            channel,
            no,
            shared.clone(),
            measure_from,
        )));
    }
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
    let limit = args.warmup + args.duration;
    let stopper = {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            shared.stop.store(true, Ordering::Relaxed);
        })
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut measured = 0u64;
    for t in tasks {
        let (h, n) = t.await??;
        hist.add(h)?;
        measured += n;
    }
    let elapsed = start
        .elapsed()
        .saturating_sub(args.warmup)
        .as_secs_f64()
        .max(1e-9);
    progress.abort();
    stopper.abort();
    eprintln!();
    let rate = measured as f64 / elapsed;
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let errors = shared.errors.load(Ordering::Relaxed);
    if args.json {
        let summary = serde_json::json!({
            "mode": "publish", "clients": args.clients, "connections": connections, "batch": args.batch, "payload_bytes": args.payload,
            "events": measured, "seconds": elapsed, "events_per_sec": rate, "rpcs": hist.len(), "errors": errors,
            "latency_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": hist.max() as f64 / 1000.0},
        });
        println!("{summary}");
    } else {
        println!(
            "mode publish  clients {}  connections {connections}  batch {}  payload {} B",
            args.clients, args.batch, args.payload
        );
        println!(
            "events {measured} in {elapsed:.2}s = {rate:.0} events/s  ({} RPCs, {errors} errors)",
            hist.len()
        );
        println!(
            "RPC latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            hist.max() as f64 / 1000.0
        );
    }
    Ok(())
}
