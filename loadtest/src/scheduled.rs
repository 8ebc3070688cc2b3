//! Mode `scheduled`: the delivery engine end to end, bounded and self-stopping.
//!
//! 1. Every member of every group opens its `Consume` stream and subscribes
//!    (start = latest: the groups exist before anything is published, and the
//!    first event is due `--lead` later).
//! 2. `--events` events are published with `PublishBatch`, due uniformly at
//!    `--rate` per second from start + lead (or all at that instant, `--burst`).
//! 3. The run waits until each group has received each message id at least once,
//!    every member's stream has ended, or `--timeout` passes; then members flush
//!    their acks and stop.
//!
//! The run fails (non-zero exit) when an event is missing from a group or any
//! delivery arrived before its `schedule_ts`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{Event, PublishBatchRequest, PublishBatchResponse};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::consumer::{Member, MemberConfig, Tracker};
use crate::report::{notice, now_us, Counters, GroupReport, PublishStats, Report};
use crate::rss;

/// Attempts per PublishBatch before its events count as failed.
const PUBLISH_ATTEMPTS: u32 = 3;
const PUBLISH_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Missing message ids listed per group.
const MISSING_IDS_SHOWN: usize = 5;
/// How long stopped members get to flush their acks and return.
const MEMBER_STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(clap::Args, Clone)]
pub struct ScheduledArgs {
    /// gRPC address of the node.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    addr: String,
    /// Topic to publish to and consume from (default: `lt-<run tag>`, unique per run).
    #[arg(long)]
    topic: Option<String>,
    /// Consumer groups; each one receives every event (fan-out).
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Members per group, each one `Consume` stream on its own connection.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Unacked deliveries each member may hold (the subscribe's `max_inflight`).
    #[arg(long, default_value_t = 1000)]
    max_inflight: u32,
    /// Events to publish.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Due times per second: event i is due at start + lead + i / rate.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// The first due time is this long after the start, so publishing gets ahead of firing.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    lead: Duration,
    /// Every event due at the same instant, start + lead.
    #[arg(long)]
    burst: bool,
    /// Concurrent publishers, each on its own connection.
    #[arg(long, default_value_t = 4)]
    publish_clients: usize,
    /// Events per PublishBatch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Delivery ids per ack message (pending acks are also flushed every 5 ms).
    #[arg(long, default_value_t = 256)]
    ack_batch: usize,
    /// Hard stop, from the start (default: lead + events / rate + 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Sample this process's VmRSS (the server's pid) every 100 ms.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// What to publish: ids, due times, topic and payload of every event.
struct Plan {
    tag: String,
    topic: String,
    events: u64,
    first_due_ms: i64,
    rate: f64,
    burst: bool,
    payload: bytes::Bytes,
}

impl Plan {
    fn schedule_ts(&self, index: u64) -> i64 {
        if self.burst {
            self.first_due_ms
        } else {
            self.first_due_ms + (index as f64 * 1000.0 / self.rate) as i64
        }
    }

    fn event(&self, index: u64) -> Event {
        Event {
            message_id: format!("{}-{index}", self.tag),
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            schedule_ts: self.schedule_ts(index),
            ..Default::default()
        }
    }
}

/// A name no earlier run used: `lt-<ms since epoch, base 36>-<pid>`.
fn run_tag() -> String {
    let mut ms = (now_us() / 1000) as u64;
    let mut digits = Vec::new();
    while ms > 0 {
        digits.push(char::from_digit((ms % 36) as u32, 36).unwrap_or('0'));
        ms /= 36;
    }
    let ms: String = digits.iter().rev().collect();
    format!("lt-{ms}-{}", std::process::id())
}

async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(addr.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

fn validate(args: &ScheduledArgs) -> anyhow::Result<()> {
    ensure!(args.groups >= 1, "--groups must be at least 1");
    ensure!(args.consumers >= 1, "--consumers must be at least 1");
    ensure!(args.events >= 1, "--events must be at least 1");
    ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be positive"
    );
    ensure!(
        args.publish_clients >= 1,
        "--publish-clients must be at least 1"
    );
    ensure!(args.batch >= 1, "--batch must be at least 1");
    ensure!(args.ack_batch >= 1, "--ack-batch must be at least 1");
    Ok(())
}

/// Runs the `scheduled` mode, prints its report, and fails if an event is
/// missing or one came early.
pub async fn run(args: ScheduledArgs) -> anyhow::Result<()> {
    validate(&args)?;
    let started = Instant::now();
    let timeout = args.timeout.unwrap_or_else(|| {
        args.lead
            + Duration::from_secs_f64(args.events as f64 / args.rate)
            + Duration::from_secs(30)
    });
    let deadline = started + timeout;
    let tag = run_tag();
    let topic = args.topic.clone().unwrap_or_else(|| tag.clone());
    let group_names: Vec<String> = (0..args.groups).map(|g| format!("{tag}-g{g}")).collect();
    let tracker = Arc::new(Tracker::new(format!("{tag}-"), args.events, args.groups));
    let (stop_tx, stop_rx) = watch::channel(false);
    let rss = match args.server_pid {
        Some(pid) => Some(rss::spawn(pid, stop_rx.clone())?),
        None => None,
    };

    let members = subscribe_all(&args, &topic, &group_names, &tracker, &stop_rx).await?;

    let start_ms = now_us() / 1000;
    let plan = Arc::new(Plan {
        tag,
        topic: topic.clone(),
        events: args.events,
        first_due_ms: start_ms + args.lead.as_millis() as i64,
        rate: args.rate,
        burst: args.burst,
        payload: bytes::Bytes::from(vec![b'x'; args.payload]),
    });
    let published = Arc::new(AtomicU64::new(0));
    let progress = tokio::spawn(progress(tracker.clone(), published.clone(), args.groups));
    let publish = publish_all(&args, plan.clone(), published, deadline).await?;

    let timed_out = wait(&tracker, deadline).await;
    // Members flush their pending acks, then return what they saw.
    let _ = stop_tx.send(true);
    let (groups, total) = stop_members(members, group_names, &tracker, args.events).await;
    progress.abort();
    eprintln!();
    let rss = match rss {
        Some(task) => Some(task.await?),
        None => None,
    };
    let report = Report {
        topic,
        events: args.events,
        rate: args.rate,
        burst: args.burst,
        consumers_per_group: args.consumers,
        first_due_us: plan.schedule_ts(0) * 1000,
        last_due_us: plan.schedule_ts(args.events - 1) * 1000,
        publish,
        groups,
        total,
        timed_out,
        rss,
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        report.print_text();
    }
    let (missing, early) = (report.missing(), report.total.early);
    ensure!(
        missing == 0 && early == 0,
        "{missing} events missing, {early} early deliveries"
    );
    Ok(())
}

/// Opens every group's members, one connection each, and starts them.
async fn subscribe_all(
    args: &ScheduledArgs,
    topic: &str,
    group_names: &[String],
    tracker: &Arc<Tracker>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<(usize, JoinHandle<Counters>)>> {
    let mut members = Vec::with_capacity(group_names.len() * args.consumers);
    for (group, group_name) in group_names.iter().enumerate() {
        for _ in 0..args.consumers {
            let config = MemberConfig {
                group,
                group_name: group_name.clone(),
                topic: topic.to_string(),
                max_inflight: args.max_inflight,
                ack_batch: args.ack_batch,
            };
            let member = Member::subscribe(connect(&args.addr).await?, config, tracker.clone())
                .await
                .with_context(|| format!("subscribing group {group_name} to {topic}"))?;
            members.push((group, tokio::spawn(member.run(stop.clone()))));
        }
    }
    Ok(members)
}

/// Collects what the (already signalled) members saw: per group, and in total.
async fn stop_members(
    members: Vec<(usize, JoinHandle<Counters>)>,
    group_names: Vec<String>,
    tracker: &Tracker,
    events: u64,
) -> (Vec<GroupReport>, Counters) {
    let mut per_group: Vec<Counters> = group_names.iter().map(|_| Counters::new()).collect();
    for (group, member) in members {
        let counters = &mut per_group[group];
        match tokio::time::timeout(MEMBER_STOP_GRACE, member).await {
            Ok(Ok(seen)) => counters.merge(&seen),
            Ok(Err(join_error)) => counters.note_error(format!("member task: {join_error}")),
            Err(_) => counters.note_error("a member did not stop in time".to_string()),
        }
    }
    let mut total = Counters::new();
    let groups = per_group
        .into_iter()
        .zip(group_names)
        .enumerate()
        .map(|(group, (counters, name))| {
            total.merge(&counters);
            GroupReport {
                name,
                counters,
                missing: events - tracker.unique(group),
                missing_ids: tracker.missing_ids(group, MISSING_IDS_SHOWN),
            }
        })
        .collect();
    (groups, total)
}

/// Waits for every group to have every event; true when the deadline came first.
async fn wait(tracker: &Tracker, deadline: Instant) -> bool {
    loop {
        if tracker.complete() {
            return false;
        }
        if tracker.members_alive() == 0 {
            notice("every consume stream has ended; not waiting for the rest");
            return false;
        }
        tokio::select! {
            _ = tracker.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return true,
        }
    }
}

/// Prints published and delivered counts to stderr once a second.
async fn progress(tracker: Arc<Tracker>, published: Arc<AtomicU64>, groups: usize) {
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let unique = tracker.unique_total();
        eprint!(
            "\r{:>10} published  {:>10} delivered ({} groups)  {:>9} /s   ",
            published.load(Ordering::Relaxed),
            unique,
            groups,
            unique - last
        );
        last = unique;
    }
}

/// Publishes the plan's events in order, `--batch` at a time over
/// `--publish-clients` connections, retrying each batch a few times.
async fn publish_all(
    args: &ScheduledArgs,
    plan: Arc<Plan>,
    published: Arc<AtomicU64>,
    deadline: Instant,
) -> anyhow::Result<PublishStats> {
    let next_batch = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::with_capacity(args.publish_clients);
    for _ in 0..args.publish_clients {
        clients.push(EventServiceClient::new(connect(&args.addr).await?));
    }
    let started_us = now_us();
    let mut tasks = Vec::with_capacity(clients.len());
    for client in clients {
        let (plan, next_batch, published) = (plan.clone(), next_batch.clone(), published.clone());
        let batch = args.batch as u64;
        tasks.push(tokio::spawn(async move {
            let mut stats = PublishStats::default();
            loop {
                let from = next_batch.fetch_add(1, Ordering::Relaxed) * batch;
                if from >= plan.events || Instant::now() >= deadline {
                    break;
                }
                let to = (from + batch).min(plan.events);
                let events: Vec<Event> = (from..to).map(|i| plan.event(i)).collect();
                publish_batch(client.clone(), events, &mut stats).await;
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
        let stats = task.await?;
        total.accepted += stats.accepted;
        total.failed += stats.failed;
        total.rpc_errors += stats.rpc_errors;
        total.duplicates += stats.duplicates;
        total.due_late += stats.due_late;
    }
    total.finished_us = now_us();
    // Batches never started before the deadline count as failed too.
    total.failed = plan.events - total.accepted;
    Ok(total)
}

/// One PublishBatch with retries; tallies its outcome into `stats`.
async fn publish_batch(
    mut client: EventServiceClient<Channel>,
    events: Vec<Event>,
    stats: &mut PublishStats,
) {
    let count = events.len() as u64;
    let schedule: Vec<i64> = events.iter().map(|e| e.schedule_ts).collect();
    let request = PublishBatchRequest { events };
    for attempt in 1..=PUBLISH_ATTEMPTS {
        match client.publish_batch(request.clone()).await {
            Ok(response) => {
                let PublishBatchResponse { results } = response.into_inner();
                stats.accepted += count;
                for (result, schedule_ts) in results.iter().zip(schedule) {
                    stats.duplicates += u64::from(result.duplicate);
                    stats.due_late += u64::from(result.due_ts > schedule_ts);
                }
                return;
            }
            Err(status) => {
                stats.rpc_errors += 1;
                if stats.rpc_errors <= 5 {
                    notice(&format!("PublishBatch (attempt {attempt}): {status}"));
                }
                if attempt < PUBLISH_ATTEMPTS {
                    tokio::time::sleep(PUBLISH_RETRY_PAUSE).await;
                }
            }
        }
    }
    stats.failed += count;
}
