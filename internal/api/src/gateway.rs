//! The gateway: any node serves the whole API by sending each partition's share
//! of a request to that partition's leader.
//!
//! Owns: finding where a partition's requests go now ([`Target`]: this node
//! when it leads, else the leader's node over the shared node-to-node channel),
//! retrying on `UNAVAILABLE` (a leader change, an election, a dead peer) until
//! the request's deadline, learning leaders from `chronos-leader` hints, and
//! the metadata a forwarded request carries: `chronos-hops` (a forwarded
//! request is forwarded at most once more, so a stale view cannot loop) and
//! `chronos-scope` (the partitions an admin request covers on the receiver).
//! Does not own: what each RPC does with its share (the services do that).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronos_partition::Partition;
use chronos_placement::Placement;
use chronos_proto::v1::admin_service_client::AdminServiceClient;
use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_raftnet::Peers;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::guard::{Caller, PRINCIPAL};
use crate::status::LEADER_HINT;
use crate::Node;

/// How many times a request may be forwarded: a gateway that holds no replica
/// sends it to one that does, which may send it on to the leader.
const MAX_HOPS: u32 = 2;
pub const HOPS: &str = "chronos-hops";
pub const SCOPE: &str = "chronos-scope";
/// First wait before retrying a share whose leader was unavailable; doubles.
const RETRY_FIRST: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_millis(400);

/// The other nodes and where partitions live. Absent on a single node.
pub struct Cluster {
    pub peers: Peers,
    /// Recomputed whenever the roster changes.
    placement: parking_lot::RwLock<Arc<Placement>>,
    /// The last leader learned for each partition (from a hint or a success).
    leaders: parking_lot::Mutex<Vec<Option<u64>>>,
}

impl Cluster {
    pub fn new(peers: Peers, placement: Placement) -> Cluster {
        let n = (0..)
            .take_while(|&p| !placement.replicas(p).is_empty())
            .count();
        Cluster {
            peers,
            placement: parking_lot::RwLock::new(Arc::new(placement)),
            leaders: parking_lot::Mutex::new(vec![None; n]),
        }
    }

    /// Where partitions live now.
    pub fn placement(&self) -> Arc<Placement> {
        self.placement.read().clone()
    }

    /// Copies of each partition, as the roster says.
    pub fn replication_factor(&self) -> u32 {
        self.placement.read().replication_factor()
    }

    pub fn set_placement(&self, placement: Placement) {
        *self.placement.write() = Arc::new(placement);
    }

    fn learn(&self, partition: u32, leader: u64) {
        if let Some(slot) = self.leaders.lock().get_mut(partition as usize) {
            *slot = Some(leader);
        }
    }

    fn cached(&self, partition: u32) -> Option<u64> {
        self.leaders
            .lock()
            .get(partition as usize)
            .copied()
            .flatten()
    }
}

/// Where a partition's requests go right now.
pub enum Target {
    /// This node leads it.
    Local(Arc<Partition>),
    /// Another node leads it (or, for a partition this node does not hold,
    /// is believed to lead it or at least to know who does).
    Remote { node: u64, channel: Channel },
}

/// What a request arriving here says about its caller and its forwarding.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub caller: Caller,
    pub hops: u32,
    /// The partitions an admin request covers (set by the forwarding gateway).
    pub scope: Option<Vec<u32>>,
}

impl Incoming {
    pub fn of<T>(request: &Request<T>, partitions: u32) -> Result<Incoming, Status> {
        let caller = Caller::of(request)?;
        Incoming::from_metadata(caller, request.metadata(), partitions)
    }

    /// A request this node makes of its own accord (status gathering).
    pub fn internal() -> Incoming {
        Incoming {
            caller: Caller::Node {
                principal: "system".into(),
            },
            hops: 0,
            scope: None,
        }
    }

    fn from_metadata(
        caller: Caller,
        md: &MetadataMap,
        partitions: u32,
    ) -> Result<Incoming, Status> {
        let text = |key: &str| md.get(key).and_then(|v| v.to_str().ok());
        let hops = match text(HOPS) {
            None => 0,
            Some(v) => v
                .parse()
                .map_err(|_| Status::invalid_argument(format!("{HOPS}: {v:?} is not a count")))?,
        };
        let scope = match text(SCOPE) {
            None => None,
            Some("") => Some(Vec::new()),
            Some(v) => Some(
                v.split(',')
                    .map(|p| p.parse::<u32>().ok().filter(|&p| p < partitions))
                    .collect::<Option<Vec<u32>>>()
                    .ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "{SCOPE}: {v:?} is not a list of partitions 0..{}",
                            partitions.saturating_sub(1)
                        ))
                    })?,
            ),
        };
        Ok(Incoming {
            caller,
            hops,
            scope,
        })
    }

    /// The partitions this request covers: its scope, or every partition.
    pub fn partitions(&self, all: u32) -> Vec<u32> {
        self.scope.clone().unwrap_or_else(|| (0..all).collect())
    }
}

/// `msg` as a request forwarded one hop further, bounded by `deadline`.
pub fn forwarded<T>(
    msg: T,
    incoming: &Incoming,
    deadline: Option<Instant>,
    scope: Option<&[u32]>,
) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(d) = deadline {
        req.set_timeout(d.saturating_duration_since(Instant::now()));
    }
    let md = req.metadata_mut();
    if let Ok(v) = (incoming.hops + 1).to_string().parse() {
        md.insert(HOPS, v);
    }
    if let Ok(v) = incoming.caller.name().parse() {
        md.insert(PRINCIPAL, v);
    }
    if let Some(scope) = scope {
        let list: Vec<String> = scope.iter().map(u32::to_string).collect();
        if let Ok(v) = list.join(",").parse() {
            md.insert(SCOPE, v);
        }
    }
    req
}

/// Message size limits for forwarded calls: as large as the public API accepts.
pub fn events_client(node: &Node, channel: Channel) -> EventServiceClient<Channel> {
    let limit = node.message_limit();
    EventServiceClient::new(channel)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit)
}

pub fn admin_client(node: &Node, channel: Channel) -> AdminServiceClient<Channel> {
    let limit = node.message_limit();
    AdminServiceClient::new(channel)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit)
}

fn retryable(s: &Status) -> bool {
    s.code() == Code::Unavailable
}

/// Backoff between attempts of one request, bounded by its deadline.
struct Retry {
    deadline: Instant,
    wait: Duration,
    /// Attempts made so far (rotates the replicas a request is sent to).
    attempt: u32,
}

impl Retry {
    fn new(deadline: Instant) -> Retry {
        Retry {
            deadline,
            wait: RETRY_FIRST,
            attempt: 0,
        }
    }

    /// Waits before the next attempt when `status` may pass with time and
    /// time is left; otherwise gives `status` back as the request's answer.
    async fn after(&mut self, status: Status) -> Result<(), Status> {
        if !retryable(&status) || Instant::now() + self.wait >= self.deadline {
            return Err(status);
        }
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(RETRY_MAX);
        self.attempt += 1;
        Ok(())
    }
}

/// A forwarded call that failed in transport means the leader is
/// unreachable: UNAVAILABLE, which is retried. tonic makes such a status from
/// the connection's or HTTP/2's error and keeps that error as its source (a
/// reset stream is UNKNOWN, a connection closed under a call CANCELLED); a
/// status the other node sent arrives as trailers and has no source, so it
/// passes through as it was sent.
fn unreachable_as_unavailable(s: Status) -> Status {
    use std::error::Error as _;
    let lost = s.source().is_some()
        && matches!(s.code(), Code::Unknown | Code::Cancelled | Code::Internal);
    if !lost {
        return s;
    }
    Status::unavailable(format!(
        "lost the connection to a partition leader: {}",
        s.message()
    ))
}

fn hinted_leader(s: &Status) -> Option<u64> {
    s.metadata()
        .get(LEADER_HINT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// UNAVAILABLE for `partition`, with the leader hint when one is known.
fn no_leader(partition: u32, leader: Option<u64>, why: &str) -> Status {
    let mut status = Status::unavailable(format!("partition {partition}: {why}"));
    if let Some(l) = leader {
        if let Ok(v) = l.to_string().parse() {
            status.metadata_mut().insert(LEADER_HINT, v);
        }
    }
    status
}

impl Node {
    /// Where requests for `partition` go now; `attempt` rotates through the
    /// replicas of a partition this node does not hold and knows no leader of.
    pub fn target(
        &self,
        partition: u32,
        incoming: &Incoming,
        attempt: u32,
    ) -> Result<Target, Status> {
        let local = self.local(partition);
        let leader = match &local {
            Some(p) => p.leader(),
            None => None,
        };
        if let Some(p) = &local {
            if leader == Some(self.node_id) {
                return Ok(Target::Local(p.clone()));
            }
        }
        let Some(cluster) = &self.cluster else {
            // A single node holds everything; no leader means an election or a
            // stopped group, which the retry loop waits out.
            return Err(no_leader(partition, leader, "no leader right now"));
        };
        if incoming.hops >= MAX_HOPS {
            return Err(no_leader(
                partition,
                leader,
                "this node does not lead it and the request was already forwarded",
            ));
        }
        let node = match (local, leader) {
            (Some(_), Some(l)) => l,
            (Some(_), None) => return Err(no_leader(partition, None, "no leader right now")),
            (None, _) => match cluster.cached(partition) {
                Some(l) => l,
                None => {
                    let placement = cluster.placement();
                    let replicas = placement.replicas(partition);
                    if replicas.is_empty() {
                        return Err(Status::internal(format!(
                            "partition {partition} has no replicas in the placement"
                        )));
                    }
                    replicas[attempt as usize % replicas.len()]
                }
            },
        };
        let channel = cluster.peers.channel(node).ok_or_else(|| {
            no_leader(
                partition,
                Some(node),
                "its leader is not in this node's cluster list",
            )
        })?;
        Ok(Target::Remote { node, channel })
    }

    /// Runs `call` against `partition`'s leader, retrying on UNAVAILABLE (with
    /// the leader re-resolved) until `deadline`; the last error after that.
    pub async fn on_leader<T, F, Fut>(
        &self,
        partition: u32,
        incoming: &Incoming,
        deadline: Instant,
        mut call: F,
    ) -> Result<T, Status>
    where
        F: FnMut(Target) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut retry = Retry::new(deadline);
        loop {
            let status = match self.target(partition, incoming, retry.attempt) {
                Ok(target) => {
                    let remote = match &target {
                        Target::Remote { node, .. } => Some(*node),
                        Target::Local(_) => None,
                    };
                    if remote.is_some() {
                        metrics::counter!("chronos_forwarded_requests_total").increment(1);
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, call(target)).await {
                        Ok(Ok(v)) => {
                            if let (Some(node), Some(c)) = (remote, &self.cluster) {
                                c.learn(partition, node);
                            }
                            return Ok(v);
                        }
                        Ok(Err(s)) => unreachable_as_unavailable(s),
                        Err(_) => no_leader(partition, None, "its leader did not answer in time"),
                    }
                }
                Err(s) => s,
            };
            if let (Some(l), Some(c)) = (hinted_leader(&status), &self.cluster) {
                c.learn(partition, l);
            }
            retry.after(status).await?;
        }
    }

    /// Runs `local` over the partitions of `partitions` this node leads and
    /// `remote` once per other leader with its share; every answer, or the
    /// first error that retrying until `deadline` did not cure.
    pub async fn scatter<T, L, LF, R, RF>(
        &self,
        partitions: &[u32],
        incoming: &Incoming,
        deadline: Instant,
        local: L,
        remote: R,
    ) -> Result<Vec<T>, Status>
    where
        L: Fn(Vec<Arc<Partition>>) -> LF,
        LF: Future<Output = Result<T, Status>>,
        R: Fn(Channel, Vec<u32>) -> RF,
        RF: Future<Output = Result<T, Status>>,
    {
        let mut retry = Retry::new(deadline);
        loop {
            let attempt = retry.attempt;
            match self
                .scatter_once(partitions, incoming, deadline, attempt, &local, &remote)
                .await
            {
                Ok(v) => return Ok(v),
                Err(s) => retry.after(s).await?,
            }
        }
    }

    async fn scatter_once<T, L, LF, R, RF>(
        &self,
        partitions: &[u32],
        incoming: &Incoming,
        deadline: Instant,
        attempt: u32,
        local: &L,
        remote: &R,
    ) -> Result<Vec<T>, Status>
    where
        L: Fn(Vec<Arc<Partition>>) -> LF,
        LF: Future<Output = Result<T, Status>>,
        R: Fn(Channel, Vec<u32>) -> RF,
        RF: Future<Output = Result<T, Status>>,
    {
        let mut mine = Vec::new();
        let mut others: BTreeMap<u64, (Channel, Vec<u32>)> = BTreeMap::new();
        for &p in partitions {
            match self.target(p, incoming, attempt)? {
                Target::Local(part) => mine.push(part),
                Target::Remote { node, channel } => others
                    .entry(node)
                    .or_insert((channel, Vec::new()))
                    .1
                    .push(p),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let shares = others.into_values().map(|(ch, ps)| remote(ch, ps));
        let (mine, theirs) = tokio::time::timeout(
            left,
            futures::future::join(local(mine), futures::future::join_all(shares)),
        )
        .await
        .map_err(|_| Status::unavailable("a partition leader did not answer in time"))?;
        let mut all = vec![mine?];
        for t in theirs {
            all.push(t.map_err(unreachable_as_unavailable)?);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_made_from_a_transport_failure_is_unavailable() {
        let reset = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert_eq!(reset.code(), Code::Unknown);
        let s = unreachable_as_unavailable(reset);
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("connection reset"), "{}", s.message());
    }

    #[test]
    fn a_status_the_leader_sent_passes_through() {
        for sent in [
            Status::internal("storage failed"),
            Status::cancelled("the call was cancelled"),
            Status::unknown("transport error"),
            Status::invalid_argument("topic: empty"),
        ] {
            let code = sent.code();
            assert_eq!(unreachable_as_unavailable(sent).code(), code);
        }
    }
}
