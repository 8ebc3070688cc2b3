//! `chronos-clock`: how far this node's wall clock is from its peers', and
//! whether that is close enough for it to lead.
//!
//! A leader fires events by its own wall clock, so a leader whose clock runs
//! ahead delivers early. As CockroachDB's clock monitor does, every node
//! probes every peer (`Now` on the node-to-node listener, [`service`]) and
//! estimates the peer's offset from the round trip: `offset = remote −
//! (sent + rtt / 2)`, known to within `rtt / 2`. The latest sample counts
//! (for 5 s), so a jump shows from the next probe on.
//!
//! **Verdict** ([`within_bounds`]): this node is within bounds when a
//! majority of the cluster's nodes, itself included, agree with its clock: a
//! peer agrees when it was measured recently and its offset is not certainly
//! beyond `max_offset` (|offset| − uncertainty ≤ max_offset). A node whose
//! clock is off disagrees with every peer and loses the majority; the peers
//! keep theirs. Until a majority has been measured (at start) a node is not
//! within bounds. A single node has no peers and is always within bounds: it
//! cannot tell its own clock is wrong.
//!
//! Owns: the probe loop, the estimates, the verdict (a `watch` that the
//! partitions follow: out of bounds, they do not lead), and the
//! `chronos_clock_*` metrics. Does not own what leading means.

mod estimate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chronos_proto::clock::clock_service_client::ClockServiceClient;
use chronos_proto::clock::clock_service_server::{ClockService, ClockServiceServer};
use chronos_proto::clock::{NowReply, NowRequest};
use parking_lot::Mutex;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use estimate::Latest;
pub use estimate::{within_bounds, PeerOffset};

/// Longest a probe may take; a slower answer says little about the offset.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Wall clock, Unix milliseconds.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug, Clone, Copy)]
pub struct ClockOptions {
    /// Largest offset from the cluster at which this node may still lead.
    pub max_offset: Duration,
    /// How often every peer is probed.
    pub probe_every: Duration,
}

/// What this node knows of its clock, for `/ready`, `status` and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockReport {
    pub within_bounds: bool,
    pub max_offset_ms: i64,
    /// Every peer, in id order.
    pub peers: Vec<(u64, Option<PeerOffset>)>,
}

impl ClockReport {
    /// One line: the verdict and each peer's offset.
    pub fn describe(&self) -> String {
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|(id, o)| match o {
                Some(o) => format!("node {id} {:+} ms (±{} ms)", o.offset_ms, o.uncertainty_ms),
                None => format!("node {id} not measured"),
            })
            .collect();
        let verdict = if self.within_bounds {
            "within"
        } else {
            "NOT within"
        };
        format!(
            "clock {verdict} {} ms of the cluster's majority; peers' offsets from this node: {}",
            self.max_offset_ms,
            peers.join(", ")
        )
    }
}

/// The running monitor (cheap to clone).
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

struct Inner {
    max_offset_ms: i64,
    /// One per peer in the cluster now (the cluster is these and this node).
    samples: Mutex<BTreeMap<u64, Latest>>,
    verdict: watch::Sender<bool>,
}

impl Clock {
    /// A node without peers: always within bounds, nothing to probe.
    pub fn single() -> Clock {
        Clock {
            inner: Arc::new(Inner {
                max_offset_ms: 0,
                samples: Mutex::new(BTreeMap::new()),
                verdict: watch::channel(true).0,
            }),
        }
    }

    /// Starts probing the peers (every node but this one) that `peers`
    /// lists, asked again before each round: nodes join and leave the cluster.
    pub fn spawn<F>(peers: F, opts: ClockOptions) -> Clock
    where
        F: Fn() -> Vec<(u64, Channel)> + Send + 'static,
    {
        let first = peers();
        let clock = Clock {
            inner: Arc::new(Inner {
                max_offset_ms: opts.max_offset.as_millis() as i64,
                samples: Mutex::new(BTreeMap::new()),
                verdict: watch::channel(first.is_empty()).0,
            }),
        };
        clock.follow(&first);
        let running = clock.clone();
        tokio::spawn(async move { running.probe_loop(peers, opts.probe_every).await });
        clock
    }

    /// Keeps a sample slot for each of `peers` and none for a node gone.
    fn follow(&self, peers: &[(u64, Channel)]) {
        let mut samples = self.inner.samples.lock();
        samples.retain(|id, _| peers.iter().any(|(p, _)| p == id));
        for (id, _) in peers {
            samples.entry(*id).or_default();
        }
    }

    /// Follows the verdict: `true` while this node may lead.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.verdict.subscribe()
    }

    pub fn within_bounds(&self) -> bool {
        *self.inner.verdict.borrow()
    }

    pub fn report(&self) -> ClockReport {
        let now = Instant::now();
        let samples = self.inner.samples.lock();
        ClockReport {
            within_bounds: self.within_bounds(),
            max_offset_ms: self.inner.max_offset_ms,
            peers: samples.iter().map(|(id, s)| (*id, s.fresh(now))).collect(),
        }
    }

    async fn probe_loop<F>(self, peers: F, every: Duration)
    where
        F: Fn() -> Vec<(u64, Channel)>,
    {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let peers = peers();
            self.follow(&peers);
            let probes = peers
                .iter()
                .map(|(id, ch)| async move { (*id, probe(ch.clone()).await) });
            for (id, result) in futures::future::join_all(probes).await {
                match result {
                    Ok(sample) => {
                        metrics::gauge!("chronos_clock_offset_seconds", "peer" => id.to_string())
                            .set(sample.offset_ms as f64 / 1000.0);
                        if let Some(s) = self.inner.samples.lock().get_mut(&id) {
                            s.push(sample);
                        }
                    }
                    Err(e) => tracing::debug!(peer = id, "clock probe: {e}"),
                }
            }
            self.judge();
        }
    }

    fn judge(&self) {
        let report = {
            let now = Instant::now();
            let samples = self.inner.samples.lock();
            let offsets: Vec<Option<PeerOffset>> = samples.values().map(|s| s.fresh(now)).collect();
            within_bounds(offsets.len() + 1, &offsets, self.inner.max_offset_ms)
        };
        metrics::gauge!("chronos_clock_within_bounds").set(if report { 1.0 } else { 0.0 });
        let was = self.inner.verdict.send_replace(report);
        if was != report {
            let text = self.report().describe();
            if report {
                tracing::info!("{text}: leading again");
            } else {
                tracing::warn!(
                    "{text}: this node will not lead or fire until it is back within bounds"
                );
            }
        }
    }
}

/// One round trip to a peer.
async fn probe(channel: Channel) -> Result<PeerOffset, Status> {
    let mut client = ClockServiceClient::new(channel);
    let sent_wall = wall_ms();
    let sent = Instant::now();
    let reply = tokio::time::timeout(PROBE_TIMEOUT, client.now(NowRequest {}))
        .await
        .map_err(|_| Status::deadline_exceeded("clock probe timed out"))??
        .into_inner();
    Ok(PeerOffset::from_round_trip(
        sent_wall,
        sent.elapsed(),
        reply.wall_ms,
        sent,
    ))
}

/// The `Now` service peers probe, for the node-to-node listener.
pub fn service(node_id: u64) -> ClockServiceServer<NowService> {
    ClockServiceServer::new(NowService { node_id })
}

pub struct NowService {
    node_id: u64,
}

#[tonic::async_trait]
impl ClockService for NowService {
    async fn now(&self, _: Request<NowRequest>) -> Result<Response<NowReply>, Status> {
        Ok(Response::new(NowReply {
            wall_ms: wall_ms(),
            node_id: self.node_id,
        }))
    }
}
