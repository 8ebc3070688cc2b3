//! Mode `publish`: N concurrent clients, each sending one event per RPC
//! (`--batch 1`, the Publish RPC) or batches (PublishBatch), bounded by
//! `--duration` and `--events`. Latency is per RPC, up to the durable ack.
//!
//! Closed loop by default: each client sends its next RPC when the last one is
//! answered, and latency runs from the send. Open loop with `--rate R`: RPC k
//! is due k / R after the start whatever happened before (the clients take the
//! next due RPC when free, so `--clients` caps the RPCs in flight), and latency
//! runs from that intended send time: a stall counts against every RPC it held
//! back, not just the one that met it (coordinated omission, corrected).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chronos_client::{Bearer, Conn, Tls};
use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{
    CancelBatchRequest, CancelRequest, CancelStatus, Event, PublishBatchRequest, PublishRequest,
};
use hdrhistogram::Histogram;
use serde_json::json;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::progress::{notice, Progress, Table};
use crate::stats::{
    corrected_latency, curve_json, latency_histogram, record, LatencySummary, Pacer,
};

/// Open loop: how long after the last slot is due the run is stopped anyway.
const OPEN_LOOP_STOP_GRACE: Duration = Duration::from_secs(5);

/// Payload size and how long a publish run lasts; shared with `redis-publish`.
#[derive(clap::Args, Clone)]
pub struct Bounds {
    /// Payload bytes per event.
    #[arg(long, default_value_t = 256)]
    pub payload: usize,
    /// Stop after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many events (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub events: u64,
    /// Not measured: the first part of the run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
}

#[derive(clap::Args, Clone)]
pub struct PublishArgs {
    /// gRPC address of the node; several, comma-separated, spread the
    /// connections over the nodes of a cluster.
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
    #[command(flatten)]
    bounds: Bounds,
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Schedule each event this far in the future (0 = due now).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    due_in: Duration,
    /// Spread due times uniformly over this span after `due_in`.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    due_spread: Duration,
    /// Open loop: RPCs per second, sent on schedule whatever the answers (0 = closed loop).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Cancel each event as soon as its publish is answered, in the same
    /// client (timeouts that mostly never fire): one `Cancel` per event, or
    /// with `--batch` one `CancelBatch` per batch, timed like a publish.
    /// Needs a `--due-in`.
    #[arg(long)]
    cancel: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// CA certificate (PEM) of a server with TLS (`https://` addresses).
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// The name the server's certificate carries, if not the address' host.
    #[arg(long)]
    tls_domain: Option<String>,
    /// Bearer token sent with every RPC (or CHRONOS_TOKEN).
    #[arg(long, env = "CHRONOS_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

struct Shared {
    sent_events: AtomicU64,
    /// `--cancel`: cancels answered in the measured part of the run.
    cancelled: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
    /// Open loop: the next RPC's slot in the pacer's schedule.
    next_slot: AtomicU64,
    /// Open loop: RPCs sent more than one interval after their intended time.
    sent_behind: AtomicU64,
}

async fn client_loop(
    args: PublishArgs,
    channel: Conn,
    no: usize,
    shared: Arc<Shared>,
    start: Instant,
    pacer: Option<Pacer>,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let measure_from = start + args.bounds.warmup;
    let end = measure_from + args.bounds.duration;
    let mut client = EventServiceClient::new(channel);
    let mut hist = latency_histogram();
    let payload = bytes::Bytes::from(vec![b'x'; args.bounds.payload]);
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
        // Closed loop: latency from now. Open loop: from the slot's intended time.
        let started = match pacer {
            None => Instant::now(),
            Some(pacer) => {
                let slot = shared.next_slot.fetch_add(1, Ordering::Relaxed);
                let intended = start + pacer.offset(slot);
                if intended >= end {
                    shared.stop.store(true, Ordering::Relaxed);
                    break;
                }
                tokio::time::sleep_until(intended.into()).await;
                if intended.elapsed() > pacer.interval() {
                    shared.sent_behind.fetch_add(1, Ordering::Relaxed);
                }
                intended
            }
        };
        let (published, cancels) = if args.batch <= 1 {
            let event = make(&mut seq);
            let cancels = args.cancel.then(|| vec![cancel_of(&event)]);
            let published = client
                .publish(PublishRequest {
                    event: Some(event),
                    reschedule: false,
                })
                .await
                .map(|_| Instant::now());
            (published, cancels)
        } else {
            let events: Vec<Event> = (0..args.batch).map(|_| make(&mut seq)).collect();
            let cancels = args.cancel.then(|| events.iter().map(cancel_of).collect());
            let published = client
                .publish_batch(PublishBatchRequest { events })
                .await
                .map(|_| Instant::now());
            (published, cancels)
        };
        // With `--cancel`, the events' cancel (one RPC) follows their publish,
        // timed apart; every one must find its event pending.
        let result = match (published, cancels) {
            (Ok(answered), Some(cancels)) => {
                let n = cancels.len() as u64;
                let cancelled = if n == 1 {
                    let cancel = cancels.into_iter().next().expect("one cancel");
                    client.cancel(cancel).await.map(|_| ())
                } else {
                    cancel_all(&mut client, cancels).await
                };
                if cancelled.is_ok() && started >= measure_from {
                    record(&mut hist, answered.elapsed());
                    shared.cancelled.fetch_add(n, Ordering::Relaxed);
                }
                cancelled.map(|_| answered)
            }
            (published, _) => published,
        };
        let n = args.batch.max(1) as u64;
        match result {
            // `answered`: when the publish was (a cancel after it is timed apart).
            Ok(answered) => {
                let total = shared.sent_events.fetch_add(n, Ordering::Relaxed) + n;
                if started >= measure_from {
                    let latency = corrected_latency(started - start, answered - start);
                    record(&mut hist, latency);
                    measured_events += n;
                }
                if args.bounds.events > 0 && total >= args.bounds.events {
                    shared.stop.store(true, Ordering::Relaxed);
                }
            }
            Err(status) => {
                if shared.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                    notice(&format!("client {no}: {status}"));
                }
            }
        }
    }
    Ok((hist, measured_events))
}

fn cancel_of(event: &Event) -> CancelRequest {
    CancelRequest {
        topic: event.topic.clone(),
        message_id: event.message_id.clone(),
        key: String::new(),
    }
}

/// Cancels a batch's events in one `CancelBatch`; any not found pending
/// is an error of the run.
async fn cancel_all(
    client: &mut EventServiceClient<InterceptedService<Channel, Bearer>>,
    cancels: Vec<CancelRequest>,
) -> Result<(), tonic::Status> {
    let results = client
        .cancel_batch(CancelBatchRequest { cancels })
        .await?
        .into_inner()
        .results;
    match results
        .iter()
        .find(|r| r.status() != CancelStatus::Cancelled)
    {
        None => Ok(()),
        Some(r) => Err(tonic::Status::internal(format!(
            "cancel of {} found it {:?}",
            r.message_id,
            r.status()
        ))),
    }
}

/// Runs the `publish` mode and prints its summary.
pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(
        args.rate == 0.0 || Pacer::new(args.rate).is_some(),
        "--rate must be positive (or 0 for closed loop)"
    );
    let pacer = Pacer::new(args.rate);
    anyhow::ensure!(
        !args.cancel || !args.due_in.is_zero(),
        "--cancel needs a --due-in (an event due now fires before its cancel)"
    );
    let shared = Arc::new(Shared {
        sent_events: AtomicU64::new(0),
        cancelled: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        next_slot: AtomicU64::new(0),
        sent_behind: AtomicU64::new(0),
    });
    let connections = match args.connections {
        0 => args.clients,
        n => n.min(args.clients),
    };
    let addrs = crate::workload::nodes(&args.addr);
    let tls = match &args.tls_ca {
        None => None,
        Some(ca) => Some(Tls {
            domain: args.tls_domain.clone(),
            ..Tls::from_files(ca, None, None)?
        }),
    };
    let bearer = Bearer::new(args.token.as_deref())?;
    let mut channels = Vec::with_capacity(connections);
    for i in 0..connections {
        let addr = addrs[i % addrs.len()];
        let mut endpoint = Channel::from_shared(addr.to_string())?.tcp_nodelay(true);
        if let Some(tls) = &tls {
            endpoint = endpoint.tls_config(tls.config())?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        channels.push(Conn::new(channel, bearer.clone()));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for no in 0..args.clients {
        let channel = channels[no % connections].clone();
        tasks.push(tokio::spawn(client_loop(
            args.clone(),
            channel,
            no,
            shared.clone(),
            start,
            pacer,
        )));
    }
    let progress = Progress::start({
        let shared = shared.clone();
        let mut last = 0;
        move || {
            let now = shared.sent_events.load(Ordering::Relaxed);
            let line = format!(
                "{now:>10} events  {:>9} events/s  errors {}",
                now - last,
                shared.errors.load(Ordering::Relaxed)
            );
            last = now;
            line
        }
    });
    let stopper = {
        let shared = shared.clone();
        // Open loop ends by its schedule (no slot due past the end); the stop is
        // then a backstop, late enough that slow answers cannot cut it short.
        let grace = if pacer.is_some() {
            OPEN_LOOP_STOP_GRACE
        } else {
            Duration::ZERO
        };
        let limit = args.bounds.warmup + args.bounds.duration + grace;
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            shared.stop.store(true, Ordering::Relaxed);
        })
    };
    let mut hist = latency_histogram();
    let mut measured = 0u64;
    for t in tasks {
        let (h, n) = t.await??;
        hist.add(h)?;
        measured += n;
    }
    let elapsed = start
        .elapsed()
        .saturating_sub(args.bounds.warmup)
        .as_secs_f64()
        .max(1e-9);
    progress.finish();
    stopper.abort();
    let summary = Summary {
        loop_kind: if pacer.is_some() { "open" } else { "closed" },
        connections,
        events: measured,
        seconds: elapsed,
        rpcs: hist.len(),
        cancelled: shared.cancelled.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        sent_behind: shared.sent_behind.load(Ordering::Relaxed),
        latency: LatencySummary::of(&hist),
        curve: curve_json(&hist),
    };
    if args.json {
        println!("{}", summary.to_json(&args));
    } else {
        summary.table(&args).print();
    }
    Ok(())
}

/// What a `publish` run measured.
struct Summary {
    loop_kind: &'static str,
    connections: usize,
    events: u64,
    seconds: f64,
    rpcs: u64,
    cancelled: u64,
    errors: u64,
    sent_behind: u64,
    latency: LatencySummary,
    /// `[[percentile, ms], …]`, for `chronos-loadtest plot`.
    curve: serde_json::Value,
}

impl Summary {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }

    fn to_json(&self, args: &PublishArgs) -> serde_json::Value {
        json!({
            "mode": "publish", "loop": self.loop_kind, "target_rpcs_per_sec": (args.rate > 0.0).then_some(args.rate),
            "clients": args.clients, "connections": self.connections, "batch": args.batch, "payload_bytes": args.bounds.payload,
            "events": self.events, "seconds": self.seconds, "events_per_sec": self.rate(), "rpcs": self.rpcs,
            "cancelled": args.cancel.then_some(self.cancelled),
            "errors": self.errors, "sent_behind_schedule": self.sent_behind,
            "latency_ms": self.latency.to_json(), "latency_curve_ms": self.curve,
        })
    }

    fn table(&self, args: &PublishArgs) -> Table {
        let mut table = Table::new(format!(
            "mode publish  {} loop  clients {}  connections {}  batch {}  payload {} B",
            self.loop_kind, args.clients, self.connections, args.batch, args.bounds.payload
        ));
        table
            .row(
                "published",
                format!(
                    "{} events in {:.2}s = {:.0} events/s",
                    self.events,
                    self.seconds,
                    self.rate()
                ),
            )
            .row("RPCs", format!("{} ({} errors)", self.rpcs, self.errors));
        if args.cancel {
            table.row(
                "cancelled",
                format!(
                    "{} events, each right after its publish ({:.0}/s)",
                    self.cancelled,
                    self.cancelled as f64 / self.seconds
                ),
            );
        }
        if args.rate > 0.0 {
            table.row(
                "open loop",
                format!(
                    "target {:.0} RPCs/s, {} sent behind schedule (latency from intended send)",
                    args.rate, self.sent_behind
                ),
            );
        }
        table.row("RPC latency ms", self.latency.to_text());
        table
    }
}
