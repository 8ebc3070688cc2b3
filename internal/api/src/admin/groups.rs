//! Helpers of the consumer-group calls: validation, and running a call on
//! every partition where a group exists.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chronos_partition::Partition;
use chronos_proto::v1::*;
use tonic::transport::Channel;
use tonic::Status;

use super::{merge_groups, Admin};
use crate::forward::{ForwardAdmin, Sent};
use crate::gateway::Incoming;
use crate::{status, validate};

/// Dead letters listed when the request says 0, and the most it may ask for.
pub(super) const DEFAULT_DEAD_LETTERS: u32 = 100;
pub(super) const MAX_DEAD_LETTERS: u32 = 10_000;

pub(super) fn validate_group(group: &str, topic: &str) -> Result<(), Status> {
    validate::group("consumer_group", group)?;
    validate::topic("topic", topic)
}

pub(super) fn no_group(group: &str, topic: &str) -> Status {
    Status::not_found(format!(
        "no consumer group {group:?} on topic {topic:?}; a group is created by its first subscribe"
    ))
}

impl Admin {
    /// `req` sent to another leader, to answer for the partitions `scope`.
    pub(super) fn scoped<R: ForwardAdmin>(
        &self,
        channel: Channel,
        req: R,
        incoming: &Incoming,
        scope: &[u32],
    ) -> Sent<R::Reply> {
        self.node
            .ask(channel, req, incoming, self.deadline(), Some(scope))
    }

    /// Runs `each` on every partition where the group exists — here on those
    /// this node leads, through `remote` (a client of another leader and the
    /// partitions it answers for) elsewhere — and returns every answer;
    /// NOT_FOUND when the group exists nowhere.
    pub(super) async fn on_group<T, E, EF, R, RF>(
        &self,
        incoming: &Incoming,
        group: &str,
        topic: &str,
        each: E,
        remote: R,
    ) -> Result<Vec<T>, Status>
    where
        T: Send + 'static,
        E: Fn(Arc<Partition>) -> EF + Clone + Send + Sync + 'static,
        EF: std::future::Future<Output = Result<T, Status>> + Send,
        R: Fn(Channel, Vec<u32>) -> RF,
        RF: std::future::Future<Output = Result<Option<T>, Status>>,
    {
        let (g, t) = (group.to_string(), topic.to_string());
        let answers = self
            .scatter(
                incoming,
                move |parts| {
                    let (each, g, t) = (each.clone(), g.clone(), t.clone());
                    Box::pin(async move {
                        let parts = partitions_with(parts, &g, &t)?;
                        if parts.is_empty() {
                            return Ok(None);
                        }
                        let mut out = Vec::with_capacity(parts.len());
                        for p in parts {
                            out.push(each(p).await?);
                        }
                        Ok(Some(out))
                    })
                },
                |ch, scope| {
                    let answer = remote(ch, scope);
                    async move { Ok(answer.await?.map(|t| vec![t])) }
                },
            )
            .await?;
        if answers.iter().all(Option::is_none) {
            return Err(no_group(group, topic));
        }
        Ok(answers.into_iter().flatten().flatten().collect())
    }

    /// Groups (of `topic`, or all when empty) merged across every partition.
    pub(super) async fn groups(
        &self,
        incoming: &Incoming,
        topic: &str,
    ) -> Result<BTreeMap<(String, String), GroupInfo>, Status> {
        let answers = self
            .scatter(
                incoming,
                |parts| {
                    let topic = topic.to_string();
                    Box::pin(async move { local_groups(parts, &topic).await })
                },
                |ch, scope| {
                    let req = ListGroupsRequest {
                        topic: topic.to_string(),
                    };
                    let ask = self.scoped(ch, req, incoming, &scope);
                    async move { Ok(ask.await?.groups) }
                },
            )
            .await?;
        Ok(merge_groups(answers))
    }
}

/// Groups merged across `parts` (partitions this node leads), by (topic, name).
async fn local_groups(parts: Vec<Arc<Partition>>, topic: &str) -> Result<Vec<GroupInfo>, Status> {
    let topic = (!topic.is_empty()).then_some(topic);
    let mut merged: BTreeMap<(String, String), (GroupInfo, BTreeSet<u64>)> = BTreeMap::new();
    for p in parts {
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
            if g.next_due_ts > 0 && (info.next_due_ts == 0 || g.next_due_ts < info.next_due_ts) {
                info.next_due_ts = g.next_due_ts;
            }
        }
    }
    Ok(merged
        .into_values()
        .map(|(mut info, members)| {
            info.members = members.len() as u32;
            info
        })
        .collect())
}

/// Those of `parts` where the group exists.
fn partitions_with(
    parts: Vec<Arc<Partition>>,
    group: &str,
    topic: &str,
) -> Result<Vec<Arc<Partition>>, Status> {
    let mut found = Vec::new();
    for p in parts {
        if p.has_group(topic, group).map_err(status::from_partition)? {
            found.push(p);
        }
    }
    Ok(found)
}
