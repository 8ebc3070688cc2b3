//! Requests sent to another node as they are.
//!
//! A forwarded request reaches the same public handler on the leader's node,
//! which runs it locally; so each operation is written once, as what the
//! leader does (`Node::on_leader_of`; admin requests, scoped to the
//! partitions the receiver answers for, through `ForwardAdmin`), and
//! forwarding is this one mapping from a request type to its RPC.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use chronos_partition::Partition;
use chronos_proto::v1::admin_service_client::AdminServiceClient;
use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{
    AckRequest, AckResponse, AddNodeRequest, AddNodeResponse, CancelBatchRequest,
    CancelBatchResponse, CancelRequest, CancelResponse, DeleteGroupRequest, DeleteGroupResponse,
    ListDeadLettersRequest, ListDeadLettersResponse, ListGroupsRequest, ListGroupsResponse,
    ListPartitionsRequest, ListPartitionsResponse, ListTopicsRequest, ListTopicsResponse,
    PublishBatchRequest, PublishBatchResponse, PublishRequest, PublishResponse, RebalanceRequest,
    RebalanceResponse, RedriveDeadLettersRequest, RedriveDeadLettersResponse, RemoveNodeRequest,
    RemoveNodeResponse, ReplayEvent, ReplayRequest, SeekGroupRequest, SeekGroupResponse,
};
use chronos_proto::v1::{
    CountPendingRequest, CountPendingResponse, DescribeEventRequest, DescribeEventResponse,
    ListPendingRequest, ListPendingResponse,
};
use chronos_proto::v1::{
    CreateScheduleRequest, CreateScheduleResponse, DeleteScheduleRequest, DeleteScheduleResponse,
    GetScheduleRequest, ListSchedulesRequest, ListSchedulesResponse, PauseScheduleRequest,
    ResumeScheduleRequest, ScheduleResponse, TriggerScheduleRequest, TriggerScheduleResponse,
    UpdateScheduleRequest,
};
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

use crate::gateway::{self, Incoming, Target};
use crate::Node;

pub(crate) type Sent<R> = Pin<Box<dyn Future<Output = Result<R, Status>> + Send + 'static>>;

/// A public request one partition's leader answers.
pub trait Forward: Clone + Send + Sync + 'static {
    type Reply: Send + 'static;
    /// False for a stream, which outlives the request's deadline (only
    /// opening it is bounded).
    const BOUNDED: bool = true;
    /// True for a read answered from the applied state: a local leader
    /// serves it only once it has applied its whole log
    /// (`serving`), else a leader just elected could answer short
    /// of acknowledged writes.
    const READS_APPLIED: bool = false;
    fn send(client: EventServiceClient<Channel>, req: Request<Self>) -> Sent<Self::Reply>;
}

macro_rules! forward {
    ($req:ty => $reply:ty, $method:ident $(, bounded = $bounded:expr)? $(, reads_applied = $reads:expr)?) => {
        impl Forward for $req {
            type Reply = $reply;
            $(const BOUNDED: bool = $bounded;)?
            $(const READS_APPLIED: bool = $reads;)?
            fn send(mut client: EventServiceClient<Channel>, req: Request<Self>) -> Sent<$reply> {
                Box::pin(async move { Ok(client.$method(req).await?.into_inner()) })
            }
        }
    };
}

forward!(PublishRequest => PublishResponse, publish);
forward!(PublishBatchRequest => PublishBatchResponse, publish_batch);
forward!(CancelRequest => CancelResponse, cancel);
forward!(CancelBatchRequest => CancelBatchResponse, cancel_batch);
forward!(AckRequest => AckResponse, ack);
forward!(ReplayRequest => Streaming<ReplayEvent>, replay, bounded = false, reads_applied = true);
forward!(ListPendingRequest => ListPendingResponse, list_pending, reads_applied = true);
forward!(CountPendingRequest => CountPendingResponse, count_pending, reads_applied = true);
forward!(DescribeEventRequest => DescribeEventResponse, describe_event, reads_applied = true);
forward!(CreateScheduleRequest => CreateScheduleResponse, create_schedule);
forward!(UpdateScheduleRequest => ScheduleResponse, update_schedule);
forward!(PauseScheduleRequest => ScheduleResponse, pause_schedule);
forward!(ResumeScheduleRequest => ScheduleResponse, resume_schedule);
forward!(DeleteScheduleRequest => DeleteScheduleResponse, delete_schedule);
forward!(GetScheduleRequest => ScheduleResponse, get_schedule, reads_applied = true);
forward!(ListSchedulesRequest => ListSchedulesResponse, list_schedules, reads_applied = true);
forward!(TriggerScheduleRequest => TriggerScheduleResponse, trigger_schedule);

/// A public admin request another node answers (for its own partitions, or
/// those of the request's scope).
pub trait ForwardAdmin: Sized + Send + 'static {
    type Reply: Send + 'static;
    fn send(client: AdminServiceClient<Channel>, req: Request<Self>) -> Sent<Self::Reply>;
}

macro_rules! forward_admin {
    ($req:ty => $reply:ty, $method:ident) => {
        impl ForwardAdmin for $req {
            type Reply = $reply;
            fn send(mut client: AdminServiceClient<Channel>, req: Request<Self>) -> Sent<$reply> {
                Box::pin(async move { Ok(client.$method(req).await?.into_inner()) })
            }
        }
    };
}

forward_admin!(ListTopicsRequest => ListTopicsResponse, list_topics);
forward_admin!(ListPartitionsRequest => ListPartitionsResponse, list_partitions);
forward_admin!(ListGroupsRequest => ListGroupsResponse, list_groups);
forward_admin!(SeekGroupRequest => SeekGroupResponse, seek_group);
forward_admin!(DeleteGroupRequest => DeleteGroupResponse, delete_group);
forward_admin!(ListDeadLettersRequest => ListDeadLettersResponse, list_dead_letters);
forward_admin!(RedriveDeadLettersRequest => RedriveDeadLettersResponse, redrive_dead_letters);
forward_admin!(RebalanceRequest => RebalanceResponse, rebalance);
forward_admin!(AddNodeRequest => AddNodeResponse, add_node);
forward_admin!(RemoveNodeRequest => RemoveNodeResponse, remove_node);

impl Node {
    /// Sends admin request `req` to the node at `channel`, one hop further,
    /// within `deadline`, answering for `scope` (None: its own view).
    pub fn ask<R: ForwardAdmin>(
        &self,
        channel: Channel,
        req: R,
        incoming: &Incoming,
        deadline: Instant,
        scope: Option<&[u32]>,
    ) -> Sent<R::Reply> {
        let req = gateway::forwarded(req, incoming, Some(deadline), scope);
        R::send(gateway::admin_client(self, channel), req)
    }
}

impl Node {
    /// Runs `req` on `partition`'s leader: `here` when this node leads it,
    /// else the request is forwarded and `there` turns the leader's reply
    /// into the answer. Retried on UNAVAILABLE until `deadline`.
    pub async fn on_leader_of<R, T, H, HF>(
        &self,
        partition: u32,
        incoming: &Incoming,
        deadline: Instant,
        req: &R,
        here: H,
        there: impl Fn(R::Reply) -> T,
    ) -> Result<T, Status>
    where
        R: Forward,
        H: Fn(Arc<Partition>, R) -> HF,
        HF: Future<Output = Result<T, Status>>,
    {
        let (here, there) = (&here, &there);
        self.on_leader(partition, incoming, deadline, |target| {
            let req = req.clone();
            async move {
                match target {
                    Target::Local(p) => {
                        if R::READS_APPLIED {
                            serving(&p)?;
                        }
                        here(p, req).await
                    }
                    Target::Remote { channel, .. } => {
                        let bound = R::BOUNDED.then_some(deadline);
                        let req = gateway::forwarded(req, incoming, bound, None);
                        R::send(gateway::events_client(self, channel), req)
                            .await
                            .map(there)
                    }
                }
            }
        })
        .await
    }
}

/// Whether a local leader serves reads: once it has applied its whole log
/// and while it is not handing over. Reads answer from the applied state,
/// so a leader just elected could answer short of acknowledged writes; until
/// then this is UNAVAILABLE, which `on_leader` retries.
fn serving(part: &Partition) -> Result<(), Status> {
    if part.is_leading() {
        return Ok(());
    }
    Err(crate::status::from_partition(
        chronos_partition::PartitionError::Unavailable(format!(
            "partition {}: its leader here is not serving yet (log not all applied, or handing over)",
            part.id()
        )),
    ))
}
