//! Consumers: a subscription attaches one member to a group in every partition
//! it asked for; deliveries from all of them flow into one stream. A partition
//! led by another node is reached through an upstream `Consume` stream to its
//! leader (with the same group, start and credits), whose deliveries join the
//! same stream. Acks are split by the partition named in each delivery id and
//! go to that partition's leader.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;

use chronos_access::{Action, Permission, StreamGuard};
use chronos_config::MAX_INFLIGHT_LIMIT;
use chronos_partition::{
    parse_delivery_id, Member, Outgoing, Partition, SettleItem, SettleOp, SettleResult, Start,
    Terms,
};
use chronos_proto::v1::{
    consume_request, consume_response, AckItem, AckRequest, AckResponse, ConsumeRequest,
    ConsumeResponse, Delivery, StartPosition, SubscribeRequest,
};
use futures::Stream;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::gateway::{self, Incoming, Target};
use crate::status::invalid;
use crate::{status, validate, Node};

/// One member attached to its group in some partitions; detaches when dropped
/// (the client went away), so what it held is redelivered to other members.
pub struct Subscription {
    pub member: Arc<Member>,
    pub group: String,
    outbox: mpsc::UnboundedReceiver<Outgoing>,
    /// The node's stop signal: the subscription ends when it is set.
    stopping: tokio::sync::watch::Receiver<bool>,
    node_id: u64,
    partitions: Vec<Arc<Partition>>,
    /// Streams from the leaders of partitions this node does not lead.
    upstreams: Vec<Upstream>,
    /// Holds one of the caller's concurrent streams while the member lives.
    _quota: Option<StreamGuard>,
    /// As a stream: the deliveries it ends after, and when it ends anyway.
    limit: Option<u64>,
    wait_until: Option<tokio::time::Instant>,
}

/// A `Consume` stream to another node that leads one of the partitions.
struct Upstream {
    /// Credit grants to pass on.
    requests: mpsc::Sender<ConsumeRequest>,
    /// Copies its deliveries into the member's outbox; aborting it ends the
    /// stream, and the leader then redelivers what it held.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for p in &self.partitions {
            p.detach(self.member.id());
        }
        for u in &self.upstreams {
            u.task.abort();
        }
    }
}

impl Subscription {
    /// The next delivery; an error when a partition stopped serving it; None
    /// when every partition let go of the member.
    pub async fn next(&mut self) -> Option<Result<Delivery, Status>> {
        let stopped = |node_id| Some(Err(node_stopping(node_id)));
        // Per delivery: while the outbox holds some, only a look at the
        // stop flag, no waiter on it.
        let next = match self.outbox.try_recv() {
            Ok(_) if *self.stopping.borrow() => return stopped(self.node_id),
            Ok(next) => next,
            Err(_) => tokio::select! {
                next = self.outbox.recv() => next?,
                _ = self.stopping.wait_for(|s| *s) => return stopped(self.node_id),
            },
        };
        match next {
            Outgoing::Delivery(d) => Some(Ok(d)),
            Outgoing::Closed(reason) => Some(Err(Status::unavailable(format!(
                "{reason}; subscribe again"
            )))),
        }
    }

    /// Allows `n` more unacknowledged deliveries, here and on every upstream.
    pub fn grant(&self, n: u32) {
        self.member.grant(n);
        for u in &self.upstreams {
            let credit = ConsumeRequest {
                kind: Some(consume_request::Kind::Credit(n)),
            };
            // A full queue means grants are piling up unread; the upstream is
            // stuck and will end the subscription anyway.
            let _ = u.requests.try_send(credit);
        }
    }

    /// Deliveries as a stream that ends after the first error, after
    /// `max_deliveries`, or at `max_wait_ms`; ending drops the member.
    pub fn into_stream(self) -> Pin<Box<dyn Stream<Item = Result<Delivery, Status>> + Send>> {
        Box::pin(futures::stream::unfold(Some(self), |state| async move {
            let mut sub = state?;
            if sub.limit == Some(0) {
                return None;
            }
            let item = match sub.wait_until {
                Some(at) => tokio::time::timeout_at(at, sub.next()).await.ok()??,
                None => sub.next().await?,
            };
            sub.limit = sub.limit.map(|n| n - 1);
            let keep = item.is_ok().then_some(sub);
            Some((item, keep))
        }))
    }
}

fn node_stopping(node_id: u64) -> Status {
    Status::unavailable(format!(
        "node {node_id} is stopping; subscribe again on another node"
    ))
}

/// Validates a subscribe request (fields prefixed with `prefix`, e.g.
/// `subscribe.`) and attaches a new member in every partition it names.
pub async fn subscribe(
    node: &Node,
    incoming: &Incoming,
    prefix: &str,
    req: SubscribeRequest,
) -> Result<Subscription, Status> {
    let field = |name: &str| format!("{prefix}{name}");
    validate::group(&field("consumer_group"), &req.consumer_group)?;
    validate::topic(&field("topic"), &req.topic)?;
    let action = Action::on_group(Permission::Consume, &req.topic, &req.consumer_group);
    node.guard.authorize(&incoming.caller, &action)?;
    let stream_quota = node.guard.open_stream(&incoming.caller)?;
    if req.max_inflight > MAX_INFLIGHT_LIMIT {
        return Err(invalid(
            &field("max_inflight"),
            format!("is {}, the limit is {MAX_INFLIGHT_LIMIT}", req.max_inflight),
        ));
    }
    let start = match StartPosition::try_from(req.start) {
        Ok(StartPosition::Latest) => Start::Latest,
        Ok(StartPosition::Earliest) => Start::Earliest,
        Ok(StartPosition::Timestamp) if req.start_ts >= 0 => Start::Timestamp(req.start_ts),
        Ok(StartPosition::Timestamp) => {
            return Err(invalid(
                &field("start_ts"),
                format!("is {}; it cannot be negative", req.start_ts),
            ))
        }
        Err(_) => {
            return Err(invalid(
                &field("start"),
                format!(
                    "{} is not a StartPosition (0 LATEST, 1 EARLIEST, 2 TIMESTAMP)",
                    req.start
                ),
            ))
        }
    };
    let partitions = match req.partition_id {
        None | Some(-1) => node.all_partitions(),
        Some(id) => vec![node.partition_id(|| field("partition_id"), id.into())?],
    };
    let max_inflight = match req.max_inflight {
        0 => node.default_max_inflight,
        n => n,
    };
    let limit = (req.max_deliveries > 0).then_some(u64::from(req.max_deliveries));
    let (member, outbox) = Member::new(Terms {
        max_inflight,
        keeps_unacked: req.keep_unacked,
        max_deliveries: limit,
    });
    let mut sub = Subscription {
        member: member.clone(),
        group: req.consumer_group.clone(),
        outbox,
        stopping: node.stopping.clone(),
        node_id: node.node_id,
        partitions: Vec::new(),
        upstreams: Vec::new(),
        _quota: stream_quota,
        limit,
        wait_until: (req.max_wait_ms > 0).then(|| {
            tokio::time::Instant::now() + Duration::from_millis(u64::from(req.max_wait_ms))
        }),
    };
    let deadline = Instant::now() + node.publish_timeout;
    // Every partition at once: a slow election on one does not hold up the others.
    let attaching = partitions.into_iter().map(|p| {
        let (member, req) = (member.clone(), req.clone());
        node.on_leader(p, incoming, deadline, move |target| {
            let (member, req) = (member.clone(), req.clone());
            async move {
                match target {
                    Target::Local(part) => {
                        part.attach(req.topic.clone(), req.consumer_group.clone(), start, member)
                            .await
                            .map_err(status::from_partition)?;
                        Ok(Attached::Here(part))
                    }
                    Target::Remote { channel, .. } => {
                        let req = SubscribeRequest {
                            partition_id: Some(p as i32),
                            max_inflight,
                            // Each leader counts `max_deliveries`; when the
                            // stream ends is decided here.
                            max_wait_ms: 0,
                            ..req
                        };
                        open_upstream(node, incoming, channel, p, req, &member)
                            .await
                            .map(Attached::There)
                    }
                }
            }
        })
    });
    // A stopping node takes no new members, and one still attaching when
    // the node starts to stop gives up: its drain would otherwise wait up to
    // `publish_timeout` for leaders that are moving away from it.
    let mut stopping = node.stopping.clone();
    let attached = tokio::select! {
        attached = futures::future::join_all(attaching) => attached,
        _ = stopping.wait_for(|s| *s) => return Err(node_stopping(node.node_id)),
    };
    let mut failure = None;
    for attached in attached {
        match attached {
            Ok(Attached::Here(part)) => sub.partitions.push(part),
            Ok(Attached::There(up)) => sub.upstreams.push(up),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    // On failure `sub` drops and lets go of everything attached.
    if let Some(e) = failure {
        return Err(e);
    }
    metrics::counter!("chronos_subscriptions_total").increment(1);
    Ok(sub)
}

enum Attached {
    Here(Arc<Partition>),
    There(Upstream),
}

/// Subscribes on partition `p`'s leader and copies what it delivers into
/// `member`'s outbox until that stream ends (then the subscription ends too,
/// with UNAVAILABLE: the client subscribes again and reaches the new leader).
async fn open_upstream(
    node: &Node,
    incoming: &Incoming,
    channel: tonic::transport::Channel,
    p: u32,
    req: SubscribeRequest,
    member: &Arc<Member>,
) -> Result<Upstream, Status> {
    let (requests, rx) = mpsc::channel(UPSTREAM_REQUESTS);
    let subscribe = ConsumeRequest {
        kind: Some(consume_request::Kind::Subscribe(req)),
    };
    requests
        .send(subscribe)
        .await
        .map_err(|_| Status::internal("upstream request queue closed"))?;
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    // Only the subscribe is bounded in time; the stream lives on.
    let mut inbound = gateway::events_client(node, channel)
        .consume(gateway::forwarded(stream, incoming, None, None))
        .await?
        .into_inner();
    let outbox = member.outbox();
    let task = tokio::spawn(async move {
        let why = loop {
            match inbound.message().await {
                Ok(Some(ConsumeResponse {
                    kind: Some(consume_response::Kind::Delivery(d)),
                })) => {
                    if outbox.send(Outgoing::Delivery(d)).is_err() {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break format!("partition {p}: its leader ended the stream"),
                Err(s) => break format!("partition {p}: {}", s.message()),
            }
        };
        let _ = outbox.send(Outgoing::Closed(why));
    });
    Ok(Upstream { requests, task })
}

/// Credit grants queued for one upstream before they are dropped.
const UPSTREAM_REQUESTS: usize = 64;

/// Acks and nacks, split by partition; answered once each partition has
/// recorded them durably. `default_group` stands in for an empty group name
/// (acks on a Consume stream). A client's unary `Ack` waits for its answer,
/// so it is recorded at once; a stream's acks may be gathered for a while
/// unless the client asks (`wait`); a forwarded share says which it is.
pub async fn ack(
    node: &Node,
    incoming: &Incoming,
    prefix: &str,
    req: AckRequest,
    default_group: Option<&str>,
) -> Result<AckResponse, Status> {
    let wait = req.wait || (default_group.is_none() && incoming.hops == 0);
    let group = match (req.consumer_group.as_str(), default_group) {
        ("", Some(g)) => g.to_string(),
        (g, _) => {
            validate::group(&format!("{prefix}consumer_group"), g)?;
            g.to_string()
        }
    };
    let mut by_partition: BTreeMap<u32, (Vec<SettleItem>, Vec<AckItem>)> = BTreeMap::new();
    let mut checked = BTreeSet::new();
    for (i, item) in req.items.into_iter().enumerate() {
        let field = || format!("{prefix}items[{i}].delivery_id");
        let (partition, topic, seq, attempt) =
            parse_delivery_id(&item.delivery_id).ok_or_else(|| {
                invalid(
                    &field(),
                    format!("{:?} is not a delivery id", item.delivery_id),
                )
            })?;
        node.partition_id(field, partition.into())?;
        if checked.insert(topic.clone()) {
            let action = Action::on_group(Permission::Consume, &topic, &group);
            node.guard.authorize(&incoming.caller, &action)?;
        }
        let op = if item.nack {
            SettleOp::Nack {
                delay_ms: item.nack_delay_ms,
            }
        } else {
            SettleOp::Ack
        };
        let entry = by_partition.entry(partition).or_default();
        entry.0.push(SettleItem {
            topic,
            seq,
            attempt,
            op,
        });
        entry.1.push(item);
    }
    let deadline = Instant::now() + node.publish_timeout;
    let settles = by_partition.into_iter().map(|(partition, (items, raw))| {
        let req = AckRequest {
            consumer_group: group.clone(),
            items: raw,
            wait,
        };
        let here = move |p: Arc<Partition>, req: AckRequest| {
            let items = items.clone();
            async move {
                let results = p
                    .settle(req.consumer_group, items, req.wait)
                    .await
                    .map_err(status::from_partition)?;
                let mut resp = AckResponse::default();
                for (r, item) in results.into_iter().zip(req.items) {
                    match r {
                        SettleResult::Acked => resp.acked += 1,
                        SettleResult::Nacked => resp.nacked += 1,
                        SettleResult::Unknown => resp.unknown.push(item.delivery_id),
                    }
                }
                metrics::counter!("chronos_acks_total").increment(u64::from(resp.acked));
                metrics::counter!("chronos_nacks_total").increment(u64::from(resp.nacked));
                Ok(resp)
            }
        };
        async move {
            node.on_leader_of(partition, incoming, deadline, &req, here, |r| r)
                .await
        }
    });
    let mut resp = AckResponse::default();
    for share in futures::future::join_all(settles).await {
        let share = share?;
        resp.acked += share.acked;
        resp.nacked += share.nacked;
        resp.unknown.extend(share.unknown);
    }
    Ok(resp)
}

/// Responses a Consume stream buffers before it waits for the client.
const CONSUME_BUFFER: usize = 1024;

/// Runs a Consume stream: the first message subscribes; then acks (answered
/// in-band, in the order they complete) and credit grants, while deliveries
/// flow out.
pub async fn consume(
    node: Arc<Node>,
    incoming: Incoming,
    mut inbound: Streaming<ConsumeRequest>,
) -> Result<mpsc::Receiver<Result<ConsumeResponse, Status>>, Status> {
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| invalid("subscribe", "the stream ended before subscribing"))?;
    let Some(consume_request::Kind::Subscribe(req)) = first.kind else {
        return Err(invalid(
            "subscribe",
            "the first message of a Consume stream must be `subscribe`",
        ));
    };
    let mut sub = subscribe(&node, &incoming, "subscribe.", req).await?;
    let (out, rx) = mpsc::channel(CONSUME_BUFFER);
    tokio::spawn(async move {
        // A client that half-closes (sends nothing more) still receives, up
        // to its credits; the stream ends when it goes away.
        let mut inbound_open = true;
        loop {
            tokio::select! {
                delivery = sub.next() => {
                    let Some(delivery) = delivery else { return };
                    let failed = delivery.is_err();
                    let msg = delivery.map(|d| ConsumeResponse {
                        kind: Some(consume_response::Kind::Delivery(d)),
                    });
                    if out.send(msg).await.is_err() || failed {
                        return;
                    }
                }
                msg = inbound.message(), if inbound_open => match msg {
                    Ok(Some(msg)) => {
                        if let Err(status) = in_band(&node, &incoming, &sub, &out, msg) {
                            let _ = out.send(Err(status)).await;
                            return;
                        }
                    }
                    Ok(None) => inbound_open = false,
                    // The client went away: detach (by dropping `sub`).
                    Err(_) => return,
                },
                _ = out.closed() => return,
            }
        }
    });
    Ok(rx)
}

/// One client message after the subscribe.
fn in_band(
    node: &Arc<Node>,
    incoming: &Incoming,
    sub: &Subscription,
    out: &mpsc::Sender<Result<ConsumeResponse, Status>>,
    msg: ConsumeRequest,
) -> Result<(), Status> {
    match msg.kind {
        Some(consume_request::Kind::Credit(n)) => {
            sub.grant(n);
            Ok(())
        }
        Some(consume_request::Kind::Ack(req)) => {
            // Answered when durable, without holding up deliveries meanwhile.
            let (node, out, group) = (node.clone(), out.clone(), sub.group.clone());
            let incoming = incoming.clone();
            tokio::spawn(async move {
                let resp = ack(&node, &incoming, "ack.", req, Some(&group))
                    .await
                    .map(|a| ConsumeResponse {
                        kind: Some(consume_response::Kind::Ack(a)),
                    });
                let _ = out.send(resp).await;
            });
            Ok(())
        }
        Some(consume_request::Kind::Subscribe(_)) => Err(invalid(
            "subscribe",
            "a Consume stream subscribes once, in its first message",
        )),
        None => Err(invalid(
            "kind",
            "a ConsumeRequest needs one of subscribe, ack or credit",
        )),
    }
}
