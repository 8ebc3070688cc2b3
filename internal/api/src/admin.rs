//! `AdminService`: topics, partitions, cluster status, consumer groups
//! (merged across partitions) and their dead letters.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chronos_partition::PartitionStatus;
use chronos_proto::v1::admin_service_server::AdminService;
use chronos_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::{status, validate, Node};

pub struct Admin {
    node: Arc<Node>,
}

impl Admin {
    pub fn new(node: Arc<Node>) -> Admin {
        Admin { node }
    }

    fn partition_infos(&self) -> Vec<PartitionInfo> {
        self.node
            .partitions
            .iter()
            .map(|p| info(p.status()))
            .collect()
    }
}

fn info(s: PartitionStatus) -> PartitionInfo {
    PartitionInfo {
        partition: s.id,
        leader: s.leader,
        term: s.term,
        voters: s.voters,
        last_log_index: s.last_log_index,
        // openraft 0.9 does not report the commit index; applied <= commit, and
        // on a single-voter group they are equal once the apply catches up.
        commit_index: s.applied_index,
        applied_index: s.applied_index,
        next_offset: s.next_offset,
        wal_bytes: s.wal_bytes,
        wal_segments: s.wal_segments as u32,
        pending: s.pending,
        next_due_ts: s.next_due_ts.unwrap_or(0),
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn list_topics(
        &self,
        _r: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let mut pending: std::collections::BTreeMap<String, u64> = Default::default();
        for p in &self.node.partitions {
            for (name, n) in p.topics().map_err(status::from_partition)? {
                *pending.entry(name).or_default() += n;
            }
        }
        let topics = pending
            .into_iter()
            .map(|(name, pending)| TopicInfo { name, pending })
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn list_partitions(
        &self,
        _r: Request<ListPartitionsRequest>,
    ) -> Result<Response<ListPartitionsResponse>, Status> {
        Ok(Response::new(ListPartitionsResponse {
            partitions: self.partition_infos(),
        }))
    }

    async fn cluster_status(
        &self,
        _r: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        Ok(Response::new(ClusterStatusResponse {
            node_id: self.node.node_id,
            nodes: vec![NodeInfo {
                id: self.node.node_id,
                api_addr: self.node.grpc_addr.clone(),
                raft_addr: String::new(),
            }],
            partitions: self.partition_infos(),
            replication_factor: 1,
        }))
    }

    async fn list_groups(
        &self,
        r: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let topic = r.into_inner().topic;
        if !topic.is_empty() {
            validate::topic("topic", &topic)?;
        }
        let groups = self.groups((!topic.is_empty()).then_some(&topic)).await?;
        Ok(Response::new(ListGroupsResponse {
            groups: groups.into_values().collect(),
        }))
    }

    async fn describe_group(
        &self,
        r: Request<DescribeGroupRequest>,
    ) -> Result<Response<DescribeGroupResponse>, Status> {
        let r = r.into_inner();
        validate_group(&r.consumer_group, &r.topic)?;
        let mut groups = self.groups(Some(&r.topic)).await?;
        let group = groups
            .remove(&(r.topic.clone(), r.consumer_group.clone()))
            .ok_or_else(|| no_group(&r.consumer_group, &r.topic))?;
        Ok(Response::new(DescribeGroupResponse { group: Some(group) }))
    }

    async fn seek_group(
        &self,
        r: Request<SeekGroupRequest>,
    ) -> Result<Response<SeekGroupResponse>, Status> {
        let r = r.into_inner();
        validate_group(&r.consumer_group, &r.topic)?;
        if r.ts < 0 {
            return Err(Status::invalid_argument(format!(
                "ts: {} is negative; it is milliseconds since the Unix epoch",
                r.ts
            )));
        }
        let partitions = self.partitions_with(&r.consumer_group, &r.topic)?;
        for p in partitions {
            p.seek(r.topic.clone(), r.consumer_group.clone(), r.ts)
                .await
                .map_err(status::from_partition)?;
        }
        Ok(Response::new(SeekGroupResponse {}))
    }

    async fn list_dead_letters(
        &self,
        r: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let r = r.into_inner();
        validate_group(&r.consumer_group, &r.topic)?;
        let limit = match r.limit {
            0 => DEFAULT_DEAD_LETTERS,
            n if n > MAX_DEAD_LETTERS => {
                return Err(Status::invalid_argument(format!(
                    "limit: {n} is more than {MAX_DEAD_LETTERS}"
                )))
            }
            n => n,
        } as usize;
        let mut dead = Vec::new();
        for p in self.partitions_with(&r.consumer_group, &r.topic)? {
            let rows = p
                .dead_letters(&r.topic, &r.consumer_group, limit)
                .map_err(status::from_partition)?;
            dead.extend(rows.into_iter().map(|(_, d)| d));
        }
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
        let r = r.into_inner();
        validate_group(&r.consumer_group, &r.topic)?;
        for (i, id) in r.message_ids.iter().enumerate() {
            validate::message_id(&format!("message_ids[{i}]"), id)?;
        }
        let mut redriven = 0;
        for p in self.partitions_with(&r.consumer_group, &r.topic)? {
            redriven += p
                .redrive(&r.topic, &r.consumer_group, &r.message_ids)
                .await
                .map_err(status::from_partition)?;
        }
        Ok(Response::new(RedriveDeadLettersResponse { redriven }))
    }
}

/// Dead letters listed when the request says 0, and the most it may ask for.
const DEFAULT_DEAD_LETTERS: u32 = 100;
const MAX_DEAD_LETTERS: u32 = 10_000;

fn validate_group(group: &str, topic: &str) -> Result<(), Status> {
    validate::group("consumer_group", group)?;
    validate::topic("topic", topic)
}

fn no_group(group: &str, topic: &str) -> Status {
    Status::not_found(format!(
        "no consumer group {group:?} on topic {topic:?}; a group is created by its first subscribe"
    ))
}

impl Admin {
    /// Groups merged across partitions, by (topic, name).
    async fn groups(
        &self,
        topic: Option<&str>,
    ) -> Result<BTreeMap<(String, String), GroupInfo>, Status> {
        let mut merged: BTreeMap<(String, String), (GroupInfo, BTreeSet<u64>)> = BTreeMap::new();
        for p in &self.node.partitions {
            for g in p.groups(topic).await.map_err(status::from_partition)? {
                let (info, members) = merged
                    .entry((g.topic.clone(), g.group.clone()))
                    .or_insert_with(|| {
                        let info = GroupInfo {
                            name: g.group.clone(),
                            topic: g.topic.clone(),
                            ..GroupInfo::default()
                        };
                        (info, BTreeSet::new())
                    });
                members.extend(g.members.iter().copied());
                info.inflight += g.inflight;
                info.lag += g.lag;
                info.dead_letters += g.dead_letters;
                if g.next_due_ts > 0 && (info.next_due_ts == 0 || g.next_due_ts < info.next_due_ts)
                {
                    info.next_due_ts = g.next_due_ts;
                }
            }
        }
        Ok(merged
            .into_iter()
            .map(|(key, (mut info, members))| {
                info.members = members.len() as u32;
                (key, info)
            })
            .collect())
    }

    /// The partitions where the group exists; NOT_FOUND when none.
    fn partitions_with(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<std::sync::Arc<chronos_partition::Partition>>, Status> {
        let mut found = Vec::new();
        for p in &self.node.partitions {
            if p.has_group(topic, group).map_err(status::from_partition)? {
                found.push(p.clone());
            }
        }
        if found.is_empty() {
            return Err(no_group(group, topic));
        }
        Ok(found)
    }
}
