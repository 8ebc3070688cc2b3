//! `AdminService`: topics, partitions, cluster status, consumer groups
//! (merged across partitions) and their dead letters.
//!
//! In a cluster each request is scattered: this node answers for the
//! partitions it leads, and the leader of every other partition answers for
//! its share (a forwarded request scoped with `chronos-scope`); the answers are
//! merged here. Status is the exception: it asks every node for its own view
//! and never fails because a node is down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronos_access::{Action, Permission};
use chronos_partition::{Partition, PartitionStatus};
use chronos_proto::v1::admin_service_server::AdminService;
use chronos_proto::v1::*;
use tonic::{Code, Request, Response, Status};

use crate::gateway::Incoming;
use crate::status::invalid;
use crate::{status, validate, Node};

mod groups;
use groups::{no_group, validate_group, DEFAULT_DEAD_LETTERS, MAX_DEAD_LETTERS};

/// How long status waits for each other node's view.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Admin {
    node: Arc<Node>,
}

impl Admin {
    pub fn new(node: Arc<Node>) -> Admin {
        Admin { node }
    }

    fn incoming<T>(&self, r: &Request<T>) -> Result<Incoming, Status> {
        Incoming::of(r, self.node.router.partitions())
    }

    /// The request's caller and forwarding, once the caller may do `action`.
    fn admit<T>(&self, r: &Request<T>, action: Action) -> Result<Incoming, Status> {
        let incoming = self.incoming(r)?;
        self.node.guard.authorize(&incoming.caller, &action)?;
        Ok(incoming)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.node.publish_timeout
    }

    /// This node's own view of the partitions it holds (within `scope`).
    fn local_infos(&self, scope: Option<&[u32]>) -> Vec<PartitionInfo> {
        self.node
            .partitions
            .all()
            .iter()
            .filter(|p| scope.is_none_or(|s| s.contains(&p.id())))
            .map(|p| info(p.status()))
            .collect()
    }

    /// Every partition as its leader reports it (or, when its leader does not
    /// answer, as a replica that did), asking every node at once.
    async fn cluster_infos(&self) -> (Vec<PartitionInfo>, BTreeSet<u64>) {
        let Some(cluster) = &self.node.cluster else {
            return (self.local_infos(None), BTreeSet::from([self.node.node_id]));
        };
        let me = self.node.node_id;
        let views = cluster
            .peers
            .all()
            .into_iter()
            .filter(|p| p.id != me)
            .map(|peer| {
                let channel = cluster.peers.channel(peer.id);
                let id = peer.id;
                async move {
                    let all: Vec<u32> = self.node.all_partitions();
                    let deadline = Instant::now() + STATUS_TIMEOUT;
                    let incoming = Incoming::internal();
                    let req = ListPartitionsRequest {};
                    let call = self
                        .node
                        .ask(channel?, req, &incoming, deadline, Some(&all));
                    let resp = tokio::time::timeout(STATUS_TIMEOUT, call)
                        .await
                        .ok()?
                        .ok()?;
                    Some((id, resp.partitions))
                }
            });
        let mut reached = BTreeSet::from([me]);
        let mut best: BTreeMap<u32, (bool, PartitionInfo)> = BTreeMap::new();
        let mut consider = |from: u64, p: PartitionInfo| {
            let from_leader = p.leader == Some(from);
            let better = match best.get(&p.partition) {
                None => true,
                Some((had_leader, had)) => {
                    (from_leader && !had_leader)
                        || (from_leader == *had_leader
                            && (p.term, p.applied_index) > (had.term, had.applied_index))
                }
            };
            if better {
                best.insert(p.partition, (from_leader, p));
            }
        };
        for p in self.local_infos(None) {
            consider(me, p);
        }
        for (id, infos) in futures::future::join_all(views).await.into_iter().flatten() {
            reached.insert(id);
            for p in infos {
                consider(id, p);
            }
        }
        let mut infos: Vec<PartitionInfo> = best.into_values().map(|(_, p)| p).collect();
        // A partition no reachable node holds still shows, with its voters.
        let placement = cluster.placement();
        for p in self.node.all_partitions() {
            if !infos.iter().any(|i| i.partition == p) {
                infos.push(PartitionInfo {
                    partition: p,
                    voters: placement.replicas(p).to_vec(),
                    ..PartitionInfo::default()
                });
            }
        }
        infos.sort_by_key(|i| i.partition);
        (infos, reached)
    }

    /// Runs `local` over the partitions of the request's scope that this node
    /// leads, `remote` on the other leaders, and returns every answer.
    async fn scatter<T, L, R, RF>(
        &self,
        incoming: &Incoming,
        local: L,
        remote: R,
    ) -> Result<Vec<T>, Status>
    where
        L: Fn(Vec<Arc<Partition>>) -> futures::future::BoxFuture<'static, Result<T, Status>>,
        R: Fn(tonic::transport::Channel, Vec<u32>) -> RF,
        RF: std::future::Future<Output = Result<T, Status>>,
    {
        let partitions = incoming.partitions(self.node.router.partitions());
        self.node
            .scatter(&partitions, incoming, self.deadline(), local, remote)
            .await
    }
}

fn info(s: PartitionStatus) -> PartitionInfo {
    let replicas = s
        .replication
        .iter()
        .map(|&(node_id, matched)| ReplicaProgress {
            node_id,
            matched_index: matched,
            lag: s.last_log_index.saturating_sub(matched),
        })
        .collect();
    PartitionInfo {
        partition: s.id,
        leader: s.leader,
        term: s.term,
        voters: s.voters,
        learners: s.learners,
        last_log_index: s.last_log_index,
        commit_index: s.committed_index,
        applied_index: s.applied_index,
        next_offset: s.next_offset,
        wal_bytes: s.wal_bytes,
        wal_segments: s.wal_segments as u32,
        pending: s.pending,
        next_due_ts: s.next_due_ts.unwrap_or(0),
        replicas,
    }
}

/// A forwarded share that found no such group answers NOT_FOUND: none there.
fn found<T>(r: Result<T, Status>) -> Result<Option<T>, Status> {
    match r {
        Ok(resp) => Ok(Some(resp)),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}

/// Groups of several nodes' answers merged by (topic, name). A member spans
/// partitions, so members is the most any node reports, not the sum.
fn merge_groups(answers: Vec<Vec<GroupInfo>>) -> BTreeMap<(String, String), GroupInfo> {
    let mut merged: BTreeMap<(String, String), GroupInfo> = BTreeMap::new();
    for g in answers.into_iter().flatten() {
        let info = merged
            .entry((g.topic.clone(), g.name.clone()))
            .or_insert_with(|| GroupInfo {
                name: g.name.clone(),
                topic: g.topic.clone(),
                ..GroupInfo::default()
            });
        info.members = info.members.max(g.members);
        info.inflight += g.inflight;
        info.lag += g.lag;
        info.dead_letters += g.dead_letters;
        if g.next_due_ts > 0 && (info.next_due_ts == 0 || g.next_due_ts < info.next_due_ts) {
            info.next_due_ts = g.next_due_ts;
        }
    }
    merged
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn list_topics(
        &self,
        r: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let incoming = self.admit(&r, Action::cluster(Permission::Describe))?;
        let answers = self
            .scatter(
                &incoming,
                |parts| {
                    Box::pin(async move {
                        let mut topics = Vec::new();
                        for p in parts {
                            for (name, pending) in p.topics().map_err(status::from_partition)? {
                                topics.push(TopicInfo { name, pending });
                            }
                        }
                        Ok(topics)
                    })
                },
                |ch, scope| {
                    let ask = self.scoped(ch, ListTopicsRequest {}, &incoming, &scope);
                    async move { Ok(ask.await?.topics) }
                },
            )
            .await?;
        let mut pending: BTreeMap<String, u64> = BTreeMap::new();
        for t in answers.into_iter().flatten() {
            *pending.entry(t.name).or_default() += t.pending;
        }
        let topics = pending
            .into_iter()
            .map(|(name, pending)| TopicInfo { name, pending })
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn rebalance(
        &self,
        r: Request<RebalanceRequest>,
    ) -> Result<Response<RebalanceResponse>, Status> {
        let incoming = self.admit(&r, Action::cluster(Permission::Cluster))?;
        self.node.handoffs.rebalance_now();
        let mut nodes = vec![self.node.node_id];
        // Asked by a client: every other node rebalances its own too.
        if let (0, Some(cluster)) = (incoming.hops, &self.node.cluster) {
            let me = self.node.node_id;
            let asks = cluster
                .peers
                .all()
                .into_iter()
                .filter(|p| p.id != me)
                .map(|peer| {
                    let (id, channel) = (peer.id, cluster.peers.channel(peer.id));
                    let incoming = &incoming;
                    async move {
                        let deadline = Instant::now() + STATUS_TIMEOUT;
                        let call =
                            self.node
                                .ask(channel?, RebalanceRequest {}, incoming, deadline, None);
                        tokio::time::timeout(STATUS_TIMEOUT, call)
                            .await
                            .ok()?
                            .ok()?;
                        Some(id)
                    }
                });
            nodes.extend(futures::future::join_all(asks).await.into_iter().flatten());
        }
        nodes.sort_unstable();
        let done: Result<(), Status> = Ok(());
        self.node
            .guard
            .audit(&incoming.caller, "rebalance", "cluster", &done);
        Ok(Response::new(RebalanceResponse { nodes }))
    }

    async fn list_partitions(
        &self,
        r: Request<ListPartitionsRequest>,
    ) -> Result<Response<ListPartitionsResponse>, Status> {
        let incoming = self.admit(&r, Action::cluster(Permission::Describe))?;
        let partitions = match &incoming.scope {
            // Another node asks for this node's own view.
            Some(scope) => self.local_infos(Some(scope)),
            None => self.cluster_infos().await.0,
        };
        Ok(Response::new(ListPartitionsResponse { partitions }))
    }

    async fn cluster_status(
        &self,
        r: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        self.admit(&r, Action::cluster(Permission::Describe))?;
        let (partitions, reached) = self.cluster_infos().await;
        let clock = self.node.clock.report();
        let offset_of = |id: u64| {
            if id == self.node.node_id {
                return Some(0);
            }
            clock
                .peers
                .iter()
                .find(|(peer, _)| *peer == id)
                .and_then(|(_, o)| o.map(|o| o.offset_ms))
        };
        let roster = self.node.roster_now();
        let (nodes, replication_factor, moves) = match &self.node.cluster {
            None => (
                vec![NodeInfo {
                    id: self.node.node_id,
                    api_addr: self.node.grpc_addr.clone(),
                    raft_addr: String::new(),
                    reachable: true,
                    clock_offset_ms: Some(0),
                    state: "active".into(),
                }],
                1,
                Vec::new(),
            ),
            Some(c) => {
                let mut nodes = match &roster {
                    Some(r) => crate::roster::node_infos(r),
                    // Before the roster is written: the configured nodes.
                    None => c
                        .peers
                        .all()
                        .into_iter()
                        .map(|p| NodeInfo {
                            id: p.id,
                            api_addr: p.api_addr,
                            raft_addr: p.raft_addr,
                            state: "active".into(),
                            ..NodeInfo::default()
                        })
                        .collect(),
                };
                for n in &mut nodes {
                    n.reachable = reached.contains(&n.id);
                    n.clock_offset_ms = offset_of(n.id);
                }
                let moves = crate::roster::moves(&c.placement(), &partitions);
                (nodes, c.replication_factor(), moves)
            }
        };
        Ok(Response::new(ClusterStatusResponse {
            node_id: self.node.node_id,
            nodes,
            partitions,
            replication_factor,
            clock_within_bounds: clock.within_bounds,
            max_clock_offset_ms: clock.max_offset_ms,
            roster_version: roster.map_or(0, |r| r.version),
            moves,
        }))
    }

    async fn add_node(
        &self,
        r: Request<AddNodeRequest>,
    ) -> Result<Response<AddNodeResponse>, Status> {
        let incoming = self.admit(&r, Action::cluster(Permission::Cluster))?;
        let req = r.into_inner();
        let target = format!("node={} raft_addr={}", req.node_id, req.raft_addr);
        let node = chronos_proto::internal::RosterNode {
            id: req.node_id,
            raft_addr: req.raft_addr.clone(),
            api_addr: req.api_addr.clone(),
            leaving: false,
        };
        let changed = self
            .node
            .change_roster(
                &incoming,
                req,
                Node::add_rule(node),
                |a: AddNodeResponse| (a.nodes, a.roster_version),
            )
            .await;
        self.node
            .guard
            .audit(&incoming.caller, "add_node", &target, &changed);
        let (nodes, roster_version) = changed?;
        Ok(Response::new(AddNodeResponse {
            nodes,
            roster_version,
        }))
    }

    async fn remove_node(
        &self,
        r: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let incoming = self.admit(&r, Action::cluster(Permission::Cluster))?;
        let req = r.into_inner();
        let target = format!("node={}", req.node_id);
        let rule = self.node.remove_rule(req.node_id);
        let changed = self
            .node
            .change_roster(&incoming, req, rule, |a: RemoveNodeResponse| {
                (a.nodes, a.roster_version)
            })
            .await;
        self.node
            .guard
            .audit(&incoming.caller, "remove_node", &target, &changed);
        let (nodes, roster_version) = changed?;
        Ok(Response::new(RemoveNodeResponse {
            nodes,
            roster_version,
        }))
    }

    async fn list_groups(
        &self,
        r: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let incoming = self.incoming(&r)?;
        let topic = r.into_inner().topic;
        if !topic.is_empty() {
            validate::topic("topic", &topic)?;
        }
        let action = Action {
            permission: Permission::Describe,
            topic: (!topic.is_empty()).then_some(topic.as_str()),
            group: None,
        };
        self.node.guard.authorize(&incoming.caller, &action)?;
        let groups = self.groups(&incoming, &topic).await?;
        Ok(Response::new(ListGroupsResponse {
            groups: groups.into_values().collect(),
        }))
    }

    async fn describe_group(
        &self,
        r: Request<DescribeGroupRequest>,
    ) -> Result<Response<DescribeGroupResponse>, Status> {
        let incoming = self.incoming(&r)?;
        let r = r.into_inner();
        validate_group(&r.consumer_group, &r.topic)?;
        let action = Action::on_group(Permission::Describe, &r.topic, &r.consumer_group);
        self.node.guard.authorize(&incoming.caller, &action)?;
        let mut groups = self.groups(&incoming, &r.topic).await?;
        let group = groups
            .remove(&(r.topic.clone(), r.consumer_group.clone()))
            .ok_or_else(|| no_group(&r.consumer_group, &r.topic))?;
        Ok(Response::new(DescribeGroupResponse { group: Some(group) }))
    }

    async fn seek_group(
        &self,
        r: Request<SeekGroupRequest>,
    ) -> Result<Response<SeekGroupResponse>, Status> {
        let incoming = self.incoming(&r)?;
        let r = r.into_inner();
        validate_group(&r.consumer_group, &r.topic)?;
        let action = Action::on_group(Permission::Seek, &r.topic, &r.consumer_group);
        self.node.guard.authorize(&incoming.caller, &action)?;
        if r.ts < 0 {
            return Err(invalid(
                "ts",
                format!(
                    "{} is negative; it is milliseconds since the Unix epoch",
                    r.ts
                ),
            ));
        }
        let (topic, group, ts) = (r.topic.clone(), r.consumer_group.clone(), r.ts);
        let sought = self
            .on_group(
                &incoming,
                &r.consumer_group,
                &r.topic,
                move |p| {
                    let (topic, group) = (topic.clone(), group.clone());
                    async move {
                        p.seek(topic, group, ts)
                            .await
                            .map_err(status::from_partition)
                    }
                },
                |ch, scope| {
                    let ask = self.scoped(ch, r.clone(), &incoming, &scope);
                    async move { found(ask.await).map(|o| o.map(|_| ())) }
                },
            )
            .await;
        let target = format!("topic={} group={} ts={}", r.topic, r.consumer_group, r.ts);
        self.node
            .guard
            .audit(&incoming.caller, "seek_group", &target, &sought);
        sought?;
        Ok(Response::new(SeekGroupResponse {}))
    }

    async fn delete_group(
        &self,
        r: Request<DeleteGroupRequest>,
    ) -> Result<Response<DeleteGroupResponse>, Status> {
        let incoming = self.incoming(&r)?;
        let r = r.into_inner();
        validate_group(&r.consumer_group, &r.topic)?;
        let action = Action::on_group(Permission::DeleteGroup, &r.topic, &r.consumer_group);
        self.node.guard.authorize(&incoming.caller, &action)?;
        let (topic, group) = (r.topic.clone(), r.consumer_group.clone());
        let deleted = self
            .on_group(
                &incoming,
                &r.consumer_group,
                &r.topic,
                move |p| {
                    let (topic, group) = (topic.clone(), group.clone());
                    async move {
                        let dropped = p
                            .delete_group(topic, group)
                            .await
                            .map_err(status::from_partition)?
                            .unwrap_or_default();
                        Ok(DeleteGroupResponse {
                            in_flight: dropped.in_flight,
                            dead_letters: dropped.dead_letters,
                        })
                    }
                },
                |ch, scope| {
                    let ask = self.scoped(ch, r.clone(), &incoming, &scope);
                    async move { found(ask.await) }
                },
            )
            .await;
        let target = format!("topic={} group={}", r.topic, r.consumer_group);
        self.node
            .guard
            .audit(&incoming.caller, "delete_group", &target, &deleted);
        let all = deleted?;
        Ok(Response::new(DeleteGroupResponse {
            in_flight: all.iter().map(|d| d.in_flight).sum(),
            dead_letters: all.iter().map(|d| d.dead_letters).sum(),
        }))
    }

    async fn list_dead_letters(
        &self,
        r: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let incoming = self.incoming(&r)?;
        let r = r.into_inner();
        validate_group(&r.consumer_group, &r.topic)?;
        let action = Action::on_group(Permission::ReadDeadLetters, &r.topic, &r.consumer_group);
        self.node.guard.authorize(&incoming.caller, &action)?;
        let limit = match r.limit {
            0 => DEFAULT_DEAD_LETTERS,
            n if n > MAX_DEAD_LETTERS => {
                return Err(invalid(
                    "limit",
                    format!("{n} is more than {MAX_DEAD_LETTERS}"),
                ))
            }
            n => n,
        } as usize;
        let (topic, group) = (r.topic.clone(), r.consumer_group.clone());
        let answers = self
            .on_group(
                &incoming,
                &r.consumer_group,
                &r.topic,
                move |p| {
                    let rows = p.dead_letters(&topic, &group, limit);
                    async move {
                        let rows = rows.map_err(status::from_partition)?;
                        Ok(rows.into_iter().map(|(_, d)| d).collect::<Vec<_>>())
                    }
                },
                |ch, scope| {
                    let ask = self.scoped(ch, r.clone(), &incoming, &scope);
                    async move { found(ask.await).map(|o| o.map(|r| r.dead_letters)) }
                },
            )
            .await?;
        let mut dead: Vec<DeadLetter> = answers.into_iter().flatten().collect();
        // Oldest first across partitions.
        dead.sort_by_key(|d| (d.dead_ts, d.partition, d.offset));
        dead.truncate(limit);
        Ok(Response::new(ListDeadLettersResponse {
            dead_letters: dead,
        }))
    }

    async fn redrive_dead_letters(
        &self,
        r: Request<RedriveDeadLettersRequest>,
    ) -> Result<Response<RedriveDeadLettersResponse>, Status> {
        let incoming = self.incoming(&r)?;
        let r = r.into_inner();
        validate_group(&r.consumer_group, &r.topic)?;
        let action = Action::on_group(Permission::Redrive, &r.topic, &r.consumer_group);
        self.node.guard.authorize(&incoming.caller, &action)?;
        for (i, id) in r.message_ids.iter().enumerate() {
            validate::message_id(&format!("message_ids[{i}]"), id)?;
        }
        let (topic, group, ids) = (
            r.topic.clone(),
            r.consumer_group.clone(),
            r.message_ids.clone(),
        );
        let answers = self
            .on_group(
                &incoming,
                &r.consumer_group,
                &r.topic,
                move |p| {
                    let (topic, group, ids) = (topic.clone(), group.clone(), ids.clone());
                    async move {
                        p.redrive(&topic, &group, &ids)
                            .await
                            .map_err(status::from_partition)
                    }
                },
                |ch, scope| {
                    let ask = self.scoped(ch, r.clone(), &incoming, &scope);
                    async move { found(ask.await).map(|o| o.map(|r| r.redriven)) }
                },
            )
            .await;
        let target = format!(
            "topic={} group={} message_ids={}",
            r.topic,
            r.consumer_group,
            if r.message_ids.is_empty() {
                "all".to_string()
            } else {
                r.message_ids.join(",")
            }
        );
        self.node
            .guard
            .audit(&incoming.caller, "redrive_dead_letters", &target, &answers);
        let answers = answers?;
        Ok(Response::new(RedriveDeadLettersResponse {
            redriven: answers.into_iter().sum(),
        }))
    }
}
