//! `AdminService`: partition and cluster status now; topics, groups and dead
//! letters arrive with the scheduling engine.

use std::sync::Arc;

use chronos_partition::PartitionStatus;
use chronos_proto::v1::admin_service_server::AdminService;
use chronos_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::{status, Node};

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
        _r: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        Err(status::not_yet("ListGroups"))
    }

    async fn describe_group(
        &self,
        _r: Request<DescribeGroupRequest>,
    ) -> Result<Response<DescribeGroupResponse>, Status> {
        Err(status::not_yet("DescribeGroup"))
    }

    async fn seek_group(
        &self,
        _r: Request<SeekGroupRequest>,
    ) -> Result<Response<SeekGroupResponse>, Status> {
        Err(status::not_yet("SeekGroup"))
    }

    async fn list_dead_letters(
        &self,
        _r: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        Err(status::not_yet("ListDeadLetters"))
    }

    async fn redrive_dead_letters(
        &self,
        _r: Request<RedriveDeadLettersRequest>,
    ) -> Result<Response<RedriveDeadLettersResponse>, Status> {
        Err(status::not_yet("RedriveDeadLetters"))
    }
}
