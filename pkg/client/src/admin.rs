//! Admin helpers over `AdminService`: topics, partitions, cluster, groups,
//! dead letters. Thin: they return the API's own messages.

use std::time::SystemTime;

use chronos_proto::v1::admin_service_client::AdminServiceClient;
use chronos_proto::v1::{
    ClusterStatusRequest, ClusterStatusResponse, DeadLetter, DeleteGroupRequest,
    DescribeGroupRequest, GroupInfo, ListDeadLettersRequest, ListGroupsRequest,
    ListPartitionsRequest, ListTopicsRequest, PartitionInfo, RedriveDeadLettersRequest,
    SeekGroupRequest, TopicInfo,
};

use crate::event::to_ms;
use crate::{Client, Error};

/// Runs one idempotent admin RPC through the client's retry loop.
macro_rules! admin_call {
    ($client:expr, $idempotent:expr, $method:ident, $req:expr) => {{
        let req = $req;
        $client
            .call($idempotent, |ch| {
                let req = req.clone();
                async move { AdminServiceClient::new(ch).$method(req).await }
            })
            .await
    }};
}

impl Client {
    /// Every topic with its pending (not yet fired) count.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, Error> {
        Ok(admin_call!(self, true, list_topics, ListTopicsRequest {})?.topics)
    }

    /// Every partition: leader, term, log indexes, next offset, pending.
    pub async fn list_partitions(&self) -> Result<Vec<PartitionInfo>, Error> {
        Ok(admin_call!(self, true, list_partitions, ListPartitionsRequest {})?.partitions)
    }

    /// The nodes (id → API address) and partitions of the cluster.
    pub async fn cluster_status(&self) -> Result<ClusterStatusResponse, Error> {
        admin_call!(self, true, cluster_status, ClusterStatusRequest {})
    }

    /// The consumer groups of `topic` (every topic when empty).
    pub async fn list_groups(&self, topic: &str) -> Result<Vec<GroupInfo>, Error> {
        let req = ListGroupsRequest {
            topic: topic.into(),
        };
        Ok(admin_call!(self, true, list_groups, req)?.groups)
    }

    /// One group: members, deliveries in flight, lag, next due, dead letters.
    ///
    /// ```no_run
    /// # async fn demo(client: chronos_client::Client) -> Result<(), chronos_client::Error> {
    /// let g = client.describe_group("billing", "orders").await?;
    /// println!("{} in flight, lag {}", g.inflight, g.lag);
    /// # Ok(()) }
    /// ```
    pub async fn describe_group(&self, group: &str, topic: &str) -> Result<GroupInfo, Error> {
        let req = DescribeGroupRequest {
            consumer_group: group.into(),
            topic: topic.into(),
        };
        admin_call!(self, true, describe_group, req)?
            .group
            .ok_or_else(|| Error::Protocol("DescribeGroup answered without a group".into()))
    }

    /// Up to `limit` of the group's dead letters.
    pub async fn list_dead_letters(
        &self,
        group: &str,
        topic: &str,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, Error> {
        let req = ListDeadLettersRequest {
            consumer_group: group.into(),
            topic: topic.into(),
            limit,
        };
        Ok(admin_call!(self, true, list_dead_letters, req)?.dead_letters)
    }

    /// Puts the group's dead letters (only `message_ids`, or all when empty)
    /// back for delivery to this group; returns how many. Not retried: a
    /// retry after a lost answer would find nothing left to redrive.
    pub async fn redrive(
        &self,
        group: &str,
        topic: &str,
        message_ids: &[&str],
    ) -> Result<u64, Error> {
        let req = RedriveDeadLettersRequest {
            consumer_group: group.into(),
            topic: topic.into(),
            message_ids: message_ids.iter().map(|s| s.to_string()).collect(),
        };
        Ok(admin_call!(self, false, redrive_dead_letters, req)?.redriven)
    }

    /// Moves the group back (or forward) to events due at or after `at`.
    pub async fn seek_group(&self, group: &str, topic: &str, at: SystemTime) -> Result<(), Error> {
        let req = SeekGroupRequest {
            consumer_group: group.into(),
            topic: topic.into(),
            ts: to_ms(at),
        };
        admin_call!(self, true, seek_group, req)?;
        Ok(())
    }

    /// Removes the group with its in-flight events and dead letters; refused
    /// (`FailedPrecondition`) while a member is subscribed. Returns how many
    /// events were in flight and how many dead letters went with it.
    pub async fn delete_group(&self, group: &str, topic: &str) -> Result<(u64, u64), Error> {
        let req = DeleteGroupRequest {
            consumer_group: group.into(),
            topic: topic.into(),
        };
        let dropped = admin_call!(self, false, delete_group, req)?;
        Ok((dropped.in_flight, dropped.dead_letters))
    }
}
