//! What the delivery modes (`schedule`, `deliver`, `e2e`) share: their flags,
//! the [`Plan`] of events to publish, consumer groups that subscribe and are
//! collected again, and batched publishing (as fast as possible, or paced).

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
use crate::progress::notice;
use crate::progress::Progress;
use crate::report::{now_us, Counters, GroupReport, PublishStats};
use crate::rss::{self, RssStats};
use crate::stats::Pacer;

/// Attempts per PublishBatch before its events count as failed.
const PUBLISH_ATTEMPTS: u32 = 3;
const PUBLISH_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Missing message ids listed per group.
const MISSING_IDS_SHOWN: usize = 5;
/// How long stopped members get to flush their acks and return.
const MEMBER_STOP_GRACE: Duration = Duration::from_secs(5);

/// Flags of every mode that publishes events and consumes them again.
#[derive(clap::Args, Clone)]
pub struct WorkloadArgs {
    /// gRPC address of the node; several, comma-separated, spread the
    /// publishers and the members over the nodes of a cluster.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    pub addr: String,
    /// Topic to publish to and consume from (default: `lt-<run tag>`, unique per run).
    #[arg(long)]
    pub topic: Option<String>,
    /// Consumer groups; each one receives every event (fan-out).
    #[arg(long, default_value_t = 1)]
    pub groups: usize,
    /// Members per group, each one `Consume` stream on its own connection.
    #[arg(long, default_value_t = 2)]
    pub consumers: usize,
    /// Unacked deliveries each member may hold (the subscribe's `max_inflight`).
    #[arg(long, default_value_t = 1000)]
    pub max_inflight: u32,
    /// Events to publish.
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Concurrent publishers, each on its own connection.
    #[arg(long, default_value_t = 4)]
    pub publish_clients: usize,
    /// Events per PublishBatch.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 256)]
    pub payload: usize,
    /// Routing keys: event i gets key `k<i mod keys>`, so its partition is the
    /// key's (1 puts every event on one partition; 0 = no key: spread by id).
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
    /// Delivery ids per ack message (pending acks are also flushed every 5 ms).
    #[arg(long, default_value_t = 256)]
    pub ack_batch: usize,
    /// A member whose stream breaks (its node stops, a leader moves)
    /// subscribes again on the next of `--addr`'s nodes, as the SDKs do,
    /// instead of ending; what it then receives again counts as duplicates.
    #[arg(long)]
    pub resubscribe: bool,
    /// Hard stop, from the start (default depends on the mode).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Sample this process's VmRSS (the server's pid) every 100 ms.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl WorkloadArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.groups >= 1, "--groups must be at least 1");
        ensure!(self.consumers >= 1, "--consumers must be at least 1");
        ensure!(self.events >= 1, "--events must be at least 1");
        ensure!(
            self.publish_clients >= 1,
            "--publish-clients must be at least 1"
        );
        ensure!(self.batch >= 1, "--batch must be at least 1");
        ensure!(self.ack_batch >= 1, "--ack-batch must be at least 1");
        Ok(())
    }

    /// The node the `i`th connection goes to: `--addr`'s nodes in turn.
    pub fn node_addr(&self, i: usize) -> &str {
        let nodes = nodes(&self.addr);
        nodes[i % nodes.len()]
    }
}

/// When the plan's events are due.
#[derive(Clone, Copy, Debug)]
pub enum Due {
    /// Event i at `first_ms + slot(i) / rate`: slot(i) = i, or with a
    /// `shuffle` window of w > 1 events a permutation of i within its window
    /// of w (each event due at most w / rate earlier or later than in order).
    Spread {
        first_ms: i64,
        rate: f64,
        shuffle: u64,
    },
    /// All at one instant.
    At { ms: i64 },
    /// At the moment it is published (`schedule_ts` = the wall clock then).
    Now,
}

/// What to publish: ids, due times, topic and payload of every event.
pub struct Plan {
    pub tag: String,
    pub topic: String,
    pub events: u64,
    pub due: Due,
    pub payload: bytes::Bytes,
    pub keys: u64,
}

impl Plan {
    /// A fresh run's plan: topic `--topic` or the run tag.
    pub fn new(args: &WorkloadArgs, due: Due) -> Self {
        let tag = run_tag();
        Plan {
            topic: args.topic.clone().unwrap_or_else(|| tag.clone()),
            tag,
            events: args.events,
            due,
            payload: bytes::Bytes::from(vec![b'x'; args.payload]),
            keys: args.keys,
        }
    }

    pub fn schedule_ts(&self, index: u64) -> i64 {
        match self.due {
            Due::Spread {
                first_ms,
                rate,
                shuffle,
            } => first_ms + (shuffled(index, shuffle, self.events) as f64 * 1000.0 / rate) as i64,
            Due::At { ms } => ms,
            Due::Now => now_us() / 1000,
        }
    }

    pub fn event(&self, index: u64) -> Event {
        Event {
            message_id: format!("{}-{index}", self.tag),
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            schedule_ts: self.schedule_ts(index),
            key: match self.keys {
                0 => String::new(),
                keys => format!("k{}", index % keys),
            },
            ..Default::default()
        }
    }

    pub fn group_names(&self, groups: usize) -> Vec<String> {
        (0..groups).map(|g| format!("{}-g{g}", self.tag)).collect()
    }

    pub fn tracker(&self, groups: usize) -> Arc<Tracker> {
        Arc::new(Tracker::new(format!("{}-", self.tag), self.events, groups))
    }
}

/// `index` moved within its window of `window` consecutive indexes (the last
/// window may be shorter): a bijection on `0..events`, so every slot is used
/// once. The multiplier is odd and large, so neighbours land far apart.
fn shuffled(index: u64, window: u64, events: u64) -> u64 {
    if window <= 1 {
        return index;
    }
    let start = index / window * window;
    let len = window.min(events - start);
    // A multiplier coprime with len makes `i ↦ i·m + c mod len` a bijection.
    let mut m = 0x9E37_79B9_7F4A_7C15 % len;
    while gcd(m, len) != 1 {
        m += 1;
    }
    start + (((index - start) as u128 * m as u128 + 7) % len as u128) as u64
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One delivery run: its plan, groups, the tracker its members share, the
/// stop signal, RSS sampling and the progress line.
pub struct Session {
    pub plan: Arc<Plan>,
    pub group_names: Vec<String>,
    pub tracker: Arc<Tracker>,
    pub published: Arc<AtomicU64>,
    stop_tx: watch::Sender<bool>,
    rss: Option<JoinHandle<RssStats>>,
    progress: Progress,
}

/// What [`Session::finish`] collected.
pub struct Outcome {
    pub groups: Vec<GroupReport>,
    pub total: Counters,
    pub rss: Option<RssStats>,
}

impl Session {
    /// Starts RSS sampling (`--server-pid`) and the progress line.
    pub fn start(args: &WorkloadArgs, plan: Plan) -> anyhow::Result<Self> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let rss = match args.server_pid {
            Some(pid) => Some(rss::spawn(pid, stop_rx)?),
            None => None,
        };
        let group_names = plan.group_names(args.groups);
        let tracker = plan.tracker(args.groups);
        let published = Arc::new(AtomicU64::new(0));
        let progress = Progress::start(progress_line(
            tracker.clone(),
            published.clone(),
            args.groups,
        ));
        Ok(Session {
            plan: Arc::new(plan),
            group_names,
            tracker,
            published,
            stop_tx,
            rss,
            progress,
        })
    }

    /// Subscribes every member of every group; they run until [`finish`](Self::finish).
    pub async fn subscribe(&self, args: &WorkloadArgs) -> anyhow::Result<Members> {
        let stop = self.stop_tx.subscribe();
        subscribe_all(
            args,
            &self.plan.topic,
            &self.group_names,
            &self.tracker,
            &stop,
        )
        .await
    }

    /// Creates the groups with one member each, then disconnects them: events
    /// that come due afterwards wait for the groups as lag.
    pub async fn create_groups(&self, args: &WorkloadArgs) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let tracker = self.plan.tracker(args.groups);
        let one_each = WorkloadArgs {
            consumers: 1,
            ..args.clone()
        };
        let members = subscribe_all(
            &one_each,
            &self.plan.topic,
            &self.group_names,
            &tracker,
            &stop_rx,
        )
        .await?;
        let _ = stop_tx.send(true);
        stop_members(
            members,
            self.group_names.clone(),
            &tracker,
            self.plan.events,
        )
        .await;
        Ok(())
    }

    /// Publishes the plan (see [`publish_all`]).
    pub async fn publish(
        &self,
        args: &WorkloadArgs,
        deadline: Instant,
        pacer: Option<Pacer>,
    ) -> anyhow::Result<PublishStats> {
        publish_all(
            args,
            self.plan.clone(),
            self.published.clone(),
            deadline,
            pacer,
        )
        .await
    }

    /// Stops the members (they flush their acks) and collects what they saw.
    pub async fn finish(self, members: Members) -> anyhow::Result<Outcome> {
        let _ = self.stop_tx.send(true);
        let (groups, total) =
            stop_members(members, self.group_names, &self.tracker, self.plan.events).await;
        self.progress.finish();
        let rss = match self.rss {
            Some(task) => Some(task.await?),
            None => None,
        };
        Ok(Outcome { groups, total, rss })
    }
}

/// A name no earlier run used: `lt-<ms since epoch, base 36>-<pid>`.
pub fn run_tag() -> String {
    let mut ms = (now_us() / 1000) as u64;
    let mut digits = Vec::new();
    while ms > 0 {
        digits.push(char::from_digit((ms % 36) as u32, 36).unwrap_or('0'));
        ms /= 36;
    }
    let ms: String = digits.iter().rev().collect();
    format!("lt-{ms}-{}", std::process::id())
}

/// The nodes of an `--addr` flag (one, or several comma-separated).
pub fn nodes(addr: &str) -> Vec<&str> {
    addr.split(',').map(str::trim).collect()
}

pub async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(addr.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// A running member and the group it belongs to.
pub type Members = Vec<(usize, JoinHandle<Counters>)>;

/// Opens every group's members, one connection each, and starts them.
async fn subscribe_all(
    args: &WorkloadArgs,
    topic: &str,
    group_names: &[String],
    tracker: &Arc<Tracker>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Members> {
    let mut members = Vec::with_capacity(group_names.len() * args.consumers);
    for (group, group_name) in group_names.iter().enumerate() {
        for i in 0..args.consumers {
            let config = MemberConfig {
                group,
                group_name: group_name.clone(),
                topic: topic.to_string(),
                max_inflight: args.max_inflight,
                ack_batch: args.ack_batch,
                resubscribe: match args.resubscribe {
                    true => nodes(&args.addr).iter().map(|a| a.to_string()).collect(),
                    false => Vec::new(),
                },
            };
            let addr = args.node_addr(group * args.consumers + i);
            let member = Member::subscribe(connect(addr).await?, config, tracker.clone())
                .await
                .with_context(|| format!("subscribing group {group_name} to {topic}"))?;
            members.push((group, tokio::spawn(member.run(stop.clone()))));
        }
    }
    Ok(members)
}

/// Collects what the (already signalled) members saw: per group, and in total.
async fn stop_members(
    members: Members,
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
pub async fn wait(tracker: &Tracker, deadline: Instant) -> bool {
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

/// The progress line of the delivery modes.
fn progress_line(
    tracker: Arc<Tracker>,
    published: Arc<AtomicU64>,
    groups: usize,
) -> impl FnMut() -> String + Send + 'static {
    let mut last = 0;
    move || {
        let published = published.load(Ordering::Relaxed);
        // Before consumers connect (`deliver`, `capacity`) there is nothing to count.
        if tracker.members_alive() == 0 {
            return format!("{published:>10} published");
        }
        let unique = tracker.unique_total();
        let line = format!(
            "{published:>10} published  {unique:>10} delivered ({groups} groups)  {:>9} /s",
            unique - last
        );
        last = unique;
        line
    }
}

/// Publishes the plan's events in order, `--batch` at a time over
/// `--publish-clients` connections, retrying each batch a few times. With a
/// `pacer`, batch k is sent no earlier than k × interval after the start (one
/// pacer slot per batch); without, as fast as the server answers.
async fn publish_all(
    args: &WorkloadArgs,
    plan: Arc<Plan>,
    published: Arc<AtomicU64>,
    deadline: Instant,
    pacer: Option<Pacer>,
) -> anyhow::Result<PublishStats> {
    let next_batch = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::with_capacity(args.publish_clients);
    for i in 0..args.publish_clients {
        clients.push(EventServiceClient::new(connect(args.node_addr(i)).await?));
    }
    let started = Instant::now();
    let started_us = now_us();
    let mut tasks = Vec::with_capacity(clients.len());
    for client in clients {
        let (plan, next_batch, published) = (plan.clone(), next_batch.clone(), published.clone());
        let batch = args.batch as u64;
        tasks.push(tokio::spawn(async move {
            let mut stats = PublishStats::default();
            loop {
                let slot = next_batch.fetch_add(1, Ordering::Relaxed);
                let from = slot * batch;
                if let Some(pacer) = pacer {
                    tokio::time::sleep_until(started + pacer.offset(slot)).await;
                }
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
        total.add(&task.await?);
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
}

#[cfg(test)]
mod tests {
    use super::shuffled;

    #[test]
    fn shuffled_is_a_permutation_within_each_window() {
        for (events, window) in [
            (1, 1),
            (10, 1),
            (10, 3),
            (1000, 64),
            (1001, 1000),
            (97, 200),
        ] {
            let mut seen = vec![false; events as usize];
            let mut moved = 0;
            for i in 0..events {
                let j = shuffled(i, window, events);
                assert!(j < events, "slot {j} of {events}");
                assert_eq!(j / window.max(1), i / window.max(1), "left its window");
                assert!(!seen[j as usize], "slot {j} used twice");
                seen[j as usize] = true;
                moved += u64::from(i != j);
            }
            if window > 2 {
                assert!(moved > events / 2, "{moved} of {events} moved");
            }
        }
    }
}
