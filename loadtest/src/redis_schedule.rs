//! Mode `redis-schedule`: the `scheduled` workload against the Redis delay queue
//! ([`crate::redis_queue`]), bounded and self-stopping.
//!
//! 1. `--consumers` consumers and one poller start on a fresh queue.
//! 2. `--events` jobs are ZADDed, `--batch` pipelined per round trip over
//!    `--publish-clients` connections, due uniformly at `--rate` per second from
//!    start + lead (or all at that instant, `--burst`).
//! 3. The run waits until every job was received or `--timeout` passes; then the
//!    consumers ack what they hold and stop, and the queue's keys are removed.
//!
//! Lateness is receive − due, as in `scheduled`; a list queue has no consumer
//! groups, so the report has one group. The run fails when a job is missing or
//! one came early.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::consumer::Tracker;
use crate::progress::notice;
use crate::redis_queue::{self, Keys};
use crate::report::{now_us, Counters, GroupReport, PublishStats, Report};
use crate::rss;

/// Missing message ids listed.
const MISSING_IDS_SHOWN: usize = 5;
/// How long stopped consumers get to ack and return.
const CONSUMER_STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(clap::Args, Clone)]
pub struct RedisScheduleArgs {
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    addr: String,
    /// Consumers, each BLMOVE-ing on its own connection.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Jobs a consumer takes per round trip: one BLMOVE, then LMOVEs in the same
    /// pipeline; all acked (LREM) in the next round trip.
    #[arg(long, default_value_t = 1)]
    fetch: usize,
    /// Events to publish.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Due times per second: job i is due at start + lead + i / rate.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// The first due time is this long after the start, so publishing gets ahead of firing.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    lead: Duration,
    /// Every job due at the same instant, start + lead.
    #[arg(long)]
    burst: bool,
    /// Concurrent publishers, each on its own connection.
    #[arg(long, default_value_t = 4)]
    publish_clients: usize,
    /// ZADDs per pipeline.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Payload bytes per job.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Most jobs the poller's Lua script moves per call.
    #[arg(long, default_value_t = 1000)]
    poll_limit: usize,
    /// Longest the poller sleeps when nothing is due (it wakes earlier for the next due job).
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Hard stop, from the start (default: lead + events / rate + 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Sample this process's VmRSS (redis-server's pid) every 100 ms.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// When job `index` is due, in ms since the epoch.
fn due_ms(first_due_ms: i64, rate: f64, burst: bool, index: u64) -> i64 {
    if burst {
        first_due_ms
    } else {
        first_due_ms + (index as f64 * 1000.0 / rate) as i64
    }
}

/// Runs the `redis-schedule` mode, prints its report (the `scheduled` format,
/// `"mode": "redis-schedule"` in JSON), and fails if a job is missing or early.
pub async fn run(args: RedisScheduleArgs) -> anyhow::Result<()> {
    validate(&args)?;
    redis_queue::ping(&args.addr).await?;
    let started = Instant::now();
    let timeout = args.timeout.unwrap_or_else(|| {
        args.lead
            + Duration::from_secs_f64(args.events as f64 / args.rate)
            + Duration::from_secs(30)
    });
    let tag = format!("rq-{}-{}", now_us() / 1000, std::process::id());
    let keys = Keys::new(&tag);
    let tracker = Arc::new(Tracker::new(format!("{tag}-"), args.events, 1));
    let (stop_tx, stop_rx) = watch::channel(false);
    let rss = match args.server_pid {
        Some(pid) => Some(rss::spawn(pid, stop_rx.clone())?),
        None => None,
    };
    let consumers: Vec<_> = (0..args.consumers)
        .map(|_| {
            tokio::spawn(redis_queue::consumer(
                args.addr.clone(),
                keys.clone(),
                args.fetch,
                tracker.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let poller = tokio::spawn(redis_queue::poller(
        args.addr.clone(),
        keys.clone(),
        args.poll_limit,
        args.poll_interval,
        stop_rx.clone(),
    ));

    let first_due_ms = now_us() / 1000 + args.lead.as_millis() as i64;
    let published = Arc::new(AtomicU64::new(0));
    let progress = tokio::spawn(progress(tracker.clone(), published.clone()));
    let publish = publish_all(&args, &tag, first_due_ms, published, started + timeout).await?;

    let timed_out = tokio::select! {
        _ = async { while !tracker.complete() { tracker.changed().await } } => false,
        _ = tokio::time::sleep_until(started + timeout) => true,
    };
    let _ = stop_tx.send(true);
    let total = stop_all(consumers, poller).await;
    progress.abort();
    eprintln!();
    redis_queue::drop_queue(&mut redis_queue::connect(&args.addr).await?, &keys).await?;
    let rss = match rss {
        Some(task) => Some(task.await?),
        None => None,
    };
    let mut group = Counters::new();
    group.merge(&total);
    let last_due_us = due_ms(first_due_ms, args.rate, args.burst, args.events - 1) * 1000;
    let report = Report {
        mode: "redis-schedule",
        topic: keys.delayed.clone(),
        events: args.events,
        due: if args.burst {
            "burst".to_string()
        } else {
            format!("due at {:.0}/s", args.rate)
        },
        consumers_per_group: args.consumers,
        first_due_us: first_due_ms * 1000,
        drain_from_us: Some(last_due_us),
        drain_has_rate: args.burst,
        lateness_label: "lateness ms (receive - schedule_ts)",
        publish,
        groups: vec![GroupReport {
            name: "redis".to_string(),
            counters: group,
            missing: args.events - tracker.unique(0),
            missing_ids: tracker.missing_ids(0, MISSING_IDS_SHOWN),
        }],
        total,
        timed_out,
        rss,
        extra: Vec::new(),
    };
    if !args.json {
        println!(
            "system: Redis sorted-set delay queue ({} consumers fetching up to {} a round trip, Lua mover up to {} a call)",
            args.consumers, args.fetch, args.poll_limit
        );
    }
    report.finish(args.json)
}

fn validate(args: &RedisScheduleArgs) -> anyhow::Result<()> {
    ensure!(
        args.consumers >= 1 && args.publish_clients >= 1 && args.batch >= 1 && args.poll_limit >= 1,
        "counts must be at least 1"
    );
    ensure!(
        args.events >= 1 && args.rate.is_finite() && args.rate > 0.0,
        "--events and --rate must be positive"
    );
    Ok(())
}

/// Collects what the (already signalled) consumers saw, and the poller's errors.
async fn stop_all(
    consumers: Vec<JoinHandle<Counters>>,
    poller: JoinHandle<anyhow::Result<u64>>,
) -> Counters {
    let mut total = Counters::new();
    for consumer in consumers {
        match tokio::time::timeout(CONSUMER_STOP_GRACE, consumer).await {
            Ok(Ok(seen)) => total.merge(&seen),
            Ok(Err(join_error)) => total.note_error(format!("consumer task: {join_error}")),
            Err(_) => total.note_error("a consumer did not stop in time".to_string()),
        }
    }
    match poller.await {
        Ok(Ok(_moved)) => {}
        Ok(Err(error)) => total.note_error(format!("poller: {error:#}")),
        Err(join_error) => total.note_error(format!("poller task: {join_error}")),
    }
    total
}

/// Prints published and received counts to stderr once a second.
async fn progress(tracker: Arc<Tracker>, published: Arc<AtomicU64>) {
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let unique = tracker.unique_total();
        eprint!(
            "\r{:>10} published  {:>10} received  {:>9} /s   ",
            published.load(Ordering::Relaxed),
            unique,
            unique - last
        );
        last = unique;
    }
}

/// ZADDs every job, `--batch` pipelined per round trip, batches handed out in
/// order to `--publish-clients` connections.
async fn publish_all(
    args: &RedisScheduleArgs,
    tag: &str,
    first_due_ms: i64,
    published: Arc<AtomicU64>,
    deadline: Instant,
) -> anyhow::Result<PublishStats> {
    let next_batch = Arc::new(AtomicU64::new(0));
    let payload: Arc<str> = "x".repeat(args.payload).into();
    let mut tasks = Vec::with_capacity(args.publish_clients);
    let started_us = now_us();
    for _ in 0..args.publish_clients {
        let mut con = redis_queue::connect(&args.addr).await?;
        let (next_batch, published, payload) =
            (next_batch.clone(), published.clone(), payload.clone());
        let (keys, tag, args) = (Keys::new(tag), tag.to_string(), args.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = PublishStats::default();
            let batch = args.batch as u64;
            loop {
                let from = next_batch.fetch_add(1, Ordering::Relaxed) * batch;
                if from >= args.events || Instant::now() >= deadline {
                    break;
                }
                let to = (from + batch).min(args.events);
                let mut pipe = redis::pipe();
                for index in from..to {
                    let due = due_ms(first_due_ms, args.rate, args.burst, index);
                    pipe.zadd(
                        &keys.delayed,
                        redis_queue::member(&format!("{tag}-{index}"), due, &payload),
                        due,
                    )
                    .ignore();
                }
                match pipe.query_async::<()>(&mut con).await {
                    Ok(()) => stats.accepted += to - from,
                    Err(error) => {
                        stats.rpc_errors += 1;
                        notice(&format!("ZADD pipeline: {error}"));
                    }
                }
                // Published after its due time: lateness then includes publishing.
                let now_ms = now_us() / 1000;
                stats.due_late += (from..to)
                    .filter(|&i| due_ms(first_due_ms, args.rate, args.burst, i) < now_ms)
                    .count() as u64;
                published.fetch_add(to - from, Ordering::Relaxed);
            }
            stats
        }));
    }
    let mut total = PublishStats {
        started_us,
        ..Default::default()
    };
    for task in tasks {
        total.add(&task.await?);
    }
    total.finished_us = now_us();
    total.failed = args.events - total.accepted;
    Ok(total)
}
