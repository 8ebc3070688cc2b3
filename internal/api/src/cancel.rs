//! Cancels (`EventService.Cancel`, `CancelBatch`): each runs on its
//! partition's leader (here, or forwarded as it is), where the partition's
//! log decides it after every publish acknowledged before it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronos_access::{Action, Permission};
use chronos_partition::{CancelOutcome, Partition, PartitionError};
use chronos_proto::internal::CancelCommand;
use chronos_proto::v1::{
    CancelBatchRequest, CancelBatchResponse, CancelRequest, CancelResponse, CancelResult,
    CancelStatus,
};
use tonic::Status;

use crate::gateway::Incoming;
use crate::status::invalid;
use crate::{shares, status, validate, Node};

/// How long a partition may take to decide a share of cancels.
const PARTITION_TIMEOUT: Duration = Duration::from_secs(10);

/// `Cancel`: an unknown or fired event is an error status.
pub(crate) async fn one(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: CancelRequest,
) -> Result<CancelResponse, Status> {
    validate::topic("topic", &req.topic)?;
    validate::message_id("message_id", &req.message_id)?;
    node.guard.authorize(
        &incoming.caller,
        &Action::on_topic(Permission::Cancel, &req.topic),
    )?;
    let partition = node.router.route(&req.key, &req.message_id);
    let deadline = Instant::now() + node.publish_timeout;
    let here = |p: Arc<Partition>, req: CancelRequest| async move {
        let outcome = decide(&p, vec![command(&req)]).await?.remove(0);
        if let Some(refused) = status::cancel_refused(outcome, &req.topic, &req.message_id) {
            return Err(refused);
        }
        let result = result(p.id(), req.message_id, outcome);
        Ok(CancelResponse {
            partition: result.partition,
            offset: result.offset,
        })
    };
    let resp = node
        .on_leader_of(partition, incoming, deadline, &req, here, |r| r)
        .await;
    let target = format!("topic={} message_id={}", req.topic, req.message_id);
    node.guard.audit(&incoming.caller, "cancel", &target, &resp);
    record_request("Cancel", &resp);
    resp
}

/// `CancelBatch`: one share per partition, each one log entry on its
/// leader, all at once; one result per cancel, in request order. A share
/// that fails fails the call (the others are decided; a retry finds them
/// already cancelled).
pub(crate) async fn batch(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: CancelBatchRequest,
) -> Result<CancelBatchResponse, Status> {
    let cancels = req.cancels;
    check(&cancels, node.limits.max_batch_events)?;
    let topics: BTreeSet<&str> = cancels.iter().map(|c| c.topic.as_str()).collect();
    for topic in &topics {
        node.guard.authorize(
            &incoming.caller,
            &Action::on_topic(Permission::Cancel, topic),
        )?;
    }
    let target = format!(
        "topic={} cancels={}",
        topics.into_iter().collect::<Vec<_>>().join(","),
        cancels.len()
    );
    let deadline = Instant::now() + node.publish_timeout;
    let here = |p: Arc<Partition>, req: CancelBatchRequest| async move {
        let commands = req.cancels.iter().map(command).collect();
        let outcomes = decide(&p, commands).await?;
        let results = (req.cancels.into_iter().zip(outcomes))
            .map(|(c, o)| result(p.id(), c.message_id, o))
            .collect();
        Ok(CancelBatchResponse { results })
    };
    let here = &here;
    let resp = shares::run_by_partition(
        cancels,
        |c| node.router.route(&c.key, &c.message_id),
        |p, share| async move {
            let req = CancelBatchRequest { cancels: share };
            let answer = node.on_leader_of(p, incoming, deadline, &req, here, |r| r);
            answer.await.map(|r| r.results)
        },
    )
    .await
    .map(|results| CancelBatchResponse { results });
    node.guard
        .audit(&incoming.caller, "cancel_batch", &target, &resp);
    record_request("CancelBatch", &resp);
    resp
}

/// A batch's cancels: at least one, at most `max` (the publish batch
/// limit), each named by its place.
fn check(cancels: &[CancelRequest], max: usize) -> Result<(), Status> {
    if cancels.is_empty() {
        return Err(invalid("cancels", "is empty; send at least one cancel"));
    }
    if cancels.len() > max {
        return Err(invalid(
            "cancels",
            format!(
                "has {} cancels, the limit is {max} (limits.max_batch_events)",
                cancels.len()
            ),
        ));
    }
    for (i, c) in cancels.iter().enumerate() {
        validate::topic(&format!("cancels[{i}].topic"), &c.topic)?;
        validate::message_id(&format!("cancels[{i}].message_id"), &c.message_id)?;
    }
    Ok(())
}

fn command(c: &CancelRequest) -> CancelCommand {
    CancelCommand {
        topic: c.topic.clone(),
        message_id: c.message_id.clone(),
    }
}

/// Decides cancels on this node's replica, which leads.
async fn decide(p: &Partition, cancels: Vec<CancelCommand>) -> Result<Vec<CancelOutcome>, Status> {
    let outcomes = match tokio::time::timeout(PARTITION_TIMEOUT, p.cancel_many(cancels)).await {
        Ok(result) => result.map_err(status::from_partition)?,
        Err(_) => {
            return Err(status::from_partition(PartitionError::Unavailable(
                format!(
                    "partition {} did not answer the cancel within {PARTITION_TIMEOUT:?}",
                    p.id()
                ),
            )))
        }
    };
    // Counted per share, not per cancel: a counter's lookup costs more than
    // the tally.
    let mut tally = [0u64; 4];
    for o in &outcomes {
        tally[match o {
            CancelOutcome::Cancelled { .. } => 0,
            CancelOutcome::AlreadyCancelled { .. } => 1,
            CancelOutcome::NotFound => 2,
            CancelOutcome::AlreadyFired { .. } => 3,
        }] += 1;
    }
    let names = [
        "cancelled",
        "already_cancelled",
        "not_found",
        "already_fired",
    ];
    for (status, n) in names.into_iter().zip(tally).filter(|&(_, n)| n > 0) {
        metrics::counter!("chronos_cancels_total", "status" => status).increment(n);
    }
    Ok(outcomes)
}

/// Cancel RPCs answered by this node, by method and code.
fn record_request<T>(rpc: &'static str, result: &Result<T, Status>) {
    let code = match result {
        Ok(_) => "ok".to_string(),
        Err(s) => format!("{:?}", s.code()),
    };
    metrics::counter!("chronos_cancel_requests_total", "rpc" => rpc, "code" => code).increment(1);
}

fn result(partition: u32, message_id: String, outcome: CancelOutcome) -> CancelResult {
    let (status, offset) = match outcome {
        CancelOutcome::Cancelled { offset, .. } => (CancelStatus::Cancelled, offset),
        CancelOutcome::AlreadyCancelled { offset } => (CancelStatus::AlreadyCancelled, offset),
        CancelOutcome::AlreadyFired { offset } => (CancelStatus::AlreadyFired, offset),
        CancelOutcome::NotFound => (CancelStatus::NotFound, 0),
    };
    CancelResult {
        status: status as i32,
        partition,
        offset,
        message_id,
    }
}
